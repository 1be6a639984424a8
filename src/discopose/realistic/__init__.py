"""The realistic proxy: path-traced frames from another renderer (Mitsuba 3, ``scalar_rgb``) of the project's own
scenes plus clutter, through a webcam model, written as ordinary datasets (``discopose realistic``). Kept out of
training: it judges sim-to-real. It sits above ``render/`` and ``datasets/``, which never import it.
"""
