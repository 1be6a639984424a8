"""discopose: domain-randomized synthetic data, pose estimators and live tracking for a cube."""
__version__ = "0.1.0"
