"""The package version, apart from ``discopose/__init__.py`` so that modules can record it without importing
the package's public entry points (which import the estimator, which imports them)."""
__version__ = "0.1.0"
