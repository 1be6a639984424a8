"""discopose: domain-randomized synthetic data, pose estimators and live tracking for a cube."""
__version__ = "0.1.0"


def load(path, backend: str = "torch", device: str | None = None):
    """Load a trained pose estimator: ``est = discopose.load("runs/cube/best"); est.predict(image)``."""
    from discopose.estimator.api import load as _load
    return _load(path, backend=backend, device=device)
