"""The one place that picks the OpenGL platform and imports pyrender.

``PYOPENGL_PLATFORM`` must be set before PyOpenGL is first imported; EGL renders headless both on
Mesa (llvmpipe, CPU) and on NVIDIA drivers (GPU). A user's own setting (e.g. ``osmesa``) is kept.
"""
from __future__ import annotations

import os

from discopose._errors import DiscoposeError

APT_HINT = ("install the EGL/Mesa runtime: `apt-get install -y libegl1 libegl-mesa0 libgl1-mesa-dri` "
            "(or use an NVIDIA driver with EGL), and keep PYOPENGL_PLATFORM=egl")


def import_pyrender():
    """Import pyrender on a headless platform, or raise a one-line error naming what is missing."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    # One llvmpipe rasterizer thread per process: rendering scales by processes. Measured at 224x224, a
    # second thread per process left one process's speed unchanged (29.3 vs 29.1 images/s), and with two
    # workers on two cores the extra threads only compete. Ignored by NVIDIA's EGL; a user's setting is kept.
    os.environ.setdefault("LP_NUM_THREADS", "1")
    _load_triton_first()
    import numpy as np
    if not hasattr(np, "infty"):
        # pyrender 0.1.45 (the latest release) still uses the alias NumPy 2 removed, in Mesh.bounds.
        np.infty = np.inf
    try:
        import pyrender
    except ImportError as exc:
        raise DiscoposeError(f"cannot import pyrender ({exc}); `pip install pyrender` and {APT_HINT}") from None
    except Exception as exc:  # PyOpenGL raises assorted errors when libEGL is missing
        raise DiscoposeError(f"no OpenGL platform available ({type(exc).__name__}: {exc}); {APT_HINT}") from None
    return pyrender


def _load_triton_first() -> None:
    """Mesa's llvmpipe and triton (which torch/torchvision import) each bundle LLVM. Loading triton
    into a process that already holds a Mesa EGL context segfaults; loading it first is fine. So when
    triton is installed, load it before any GL context exists (about 0.2 s)."""
    try:
        import triton  # noqa: F401
    except Exception:  # not installed (CPU-only torch builds, no torch at all): nothing to order
        pass


def set_shadow_map_size(pyrender, size_px: int) -> None:
    """pyrender hard-codes 2048 x 2048 shadow maps, which dominate frame time on llvmpipe.

    The size is a module constant read by both the light and the renderer modules, so set both.
    """
    pyrender.light.SHADOW_TEX_SZ = size_px
    pyrender.renderer.SHADOW_TEX_SZ = size_px


def make_offscreen_renderer(width_px: int, height_px: int):
    pyrender = import_pyrender()
    try:
        return pyrender.OffscreenRenderer(width_px, height_px)
    except Exception as exc:
        raise DiscoposeError(f"cannot create an offscreen OpenGL context with "
                             f"PYOPENGL_PLATFORM={os.environ.get('PYOPENGL_PLATFORM')} "
                             f"({type(exc).__name__}: {exc}); {APT_HINT}") from None


def release_offscreen_renderer(renderer) -> None:
    """Delete an OffscreenRenderer's GL objects and context without ``eglTerminate``.

    pyrender's ``delete()`` terminates the EGL display, which every context in the process shares,
    so any other renderer alive in the process would fail with EGL_BAD_DISPLAY afterwards.
    """
    platform = getattr(renderer, "_platform", None)
    display = getattr(platform, "_egl_display", None)
    if display is None:  # not EGL (e.g. osmesa): pyrender's own delete is safe
        renderer.delete()
        return
    from OpenGL.EGL import eglDestroyContext, eglMakeCurrent, EGL_NO_CONTEXT, EGL_NO_SURFACE
    platform.make_current()
    renderer._renderer.delete()
    eglMakeCurrent(display, EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT)
    eglDestroyContext(display, platform._egl_context)
    platform._egl_context = None
    # OffscreenRenderer.__del__ calls delete() again; with no display left it cannot terminate it.
    platform._egl_display = None
