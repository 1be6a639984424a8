"""discopose: domain-randomized synthetic data, pose estimators and live tracking for a cube."""
from discopose._version import __version__  # noqa: F401 (the public version)


def load(path, backend: str = "auto", device: str | None = None, refine=None, onnx_threads: int | None = None,
         view_threads: int | None = None):
    """Load a pose estimator: ``est = discopose.load("cube"); est.predict(image)``.

    ``path`` is an estimator folder (a run's ``best/``) or the name of a shipped one (``"cube"``, the built-in
    57 mm cube that ``discopose cube print`` prints). ``refine``: True (or a ``discopose.refine.RefineConfig``)
    aligns the object's mesh to each full-resolution image after the networks, False does not, None (the
    default) does where the estimator was calibrated with it. ``onnx_threads``: ONNX Runtime's threads per network
    call (None: 1 on machines with at most 2 cores, as measured there; else ONNX Runtime's choice).
    ``view_threads``: threads that run several cameras' networks side by side in one call (None: 2 where network
    calls run one thread each and a second core is free, else 1)."""
    from discopose.estimator.api import load as _load
    return _load(path, backend=backend, device=device, refine=refine, onnx_threads=onnx_threads,
                 view_threads=view_threads)
