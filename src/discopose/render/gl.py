"""The one place that picks the OpenGL platform and imports pyrender.

``PYOPENGL_PLATFORM`` must be set before PyOpenGL is first imported; EGL renders headless both on
Mesa (llvmpipe, CPU) and on NVIDIA drivers (GPU). A user's own setting (e.g. ``osmesa``) is kept.
"""
from __future__ import annotations

import ctypes
import os
import types
from collections.abc import MutableSet

import numpy as np

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


class InsertionOrderedSet(MutableSet):
    """A set that iterates in insertion order.

    pyrender keeps a scene's mesh and light nodes in plain sets of objects hashed by address, and it
    iterates them to sum light contributions and to break ties when sorting meshes by distance. The
    order then depends on where the allocator put each node, so the same parameters rendered in two
    processes could differ by one intensity step at some pixels. With these sets they cannot.
    """

    def __init__(self, items=()):
        self._items = dict.fromkeys(items)

    def __contains__(self, item):
        return item in self._items

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)

    def add(self, item):
        self._items[item] = None

    def discard(self, item):
        self._items.pop(item, None)


def make_scene_deterministic(scene) -> None:
    """Give an empty pyrender Scene insertion-ordered node sets (see InsertionOrderedSet)."""
    for name in ("_mesh_nodes", "_point_light_nodes", "_spot_light_nodes", "_directional_light_nodes"):
        if getattr(scene, name):
            raise ValueError("make_scene_deterministic needs a scene with no nodes yet")
        setattr(scene, name, InsertionOrderedSet())


def _value_key(value):
    if isinstance(value, np.ndarray):
        return value.dtype.str, value.shape, value.tobytes()
    return type(value), value


def _install_uniform_cache(pyrender, gl_renderer) -> None:
    """Skip glUniform calls that would set a program's uniform to the value it already holds.

    pyrender binds every light, the camera and the projection again for each primitive: about 290
    uniform calls per frame at 224x224 with the default config, each a GL location lookup plus a
    PyOpenGL call. A uniform keeps its value in its program, so skipping an unchanged one renders the
    same pixels. The cache lives on the program object and is dropped when its GL program is created.
    """
    base = pyrender.shader_program.ShaderProgram

    class CachingProgram(base):
        def _add_to_context(self):
            self._uniform_values = {}
            super()._add_to_context()

        def set_uniform(self, name, value, unsigned=False):
            key = _value_key(value)
            if self._uniform_values.get(name) == key:
                return
            super().set_uniform(name, value, unsigned)
            self._uniform_values[name] = key

    cache = gl_renderer._program_cache
    get_program = cache.get_program

    def get_caching_program(*args, **kwargs):
        program = get_program(*args, **kwargs)
        if type(program) is base:
            # Same fields, two methods overridden: the program pyrender built, made to cache.
            program.__class__ = CachingProgram
            program._uniform_values = {}
        return program

    cache.get_program = get_caching_program


class _VisibleMeshNodes:
    """A view of a scene whose ``mesh_nodes`` are the visible ones, in the scene's order."""

    def __init__(self, scene):
        self._scene = scene

    def __getattr__(self, name):
        return getattr(self._scene, name)

    @property
    def mesh_nodes(self):
        return [node for node in self._scene.mesh_nodes if node.mesh.is_visible]


def _sort_visible_mesh_nodes_only(gl_renderer) -> None:
    """pyrender sorts every mesh node by camera distance before each pass, invisible ones included,
    and a scene with pooled distractors holds mostly invisible nodes. Its sort is stable, so leaving
    the invisible ones out keeps the order of the visible ones, and the image, unchanged."""
    sort = gl_renderer._sorted_mesh_nodes
    gl_renderer._sorted_mesh_nodes = lambda scene: sort(_VisibleMeshNodes(scene))


def _set_msaa_samples(gl_renderer, samples: int) -> None:
    """pyrender hard-codes 4x multisampling; give its multisample buffers ``samples`` instead whenever
    it (re)creates them (0 = no multisampling)."""
    if samples == 4:
        return
    from OpenGL.GL import (GL_DEPTH_COMPONENT24, GL_RENDERBUFFER, GL_RGBA, glBindRenderbuffer,
                           glRenderbufferStorageMultisample)
    configure = gl_renderer._configure_main_framebuffer

    def configure_with_samples():
        before = gl_renderer._main_fb
        configure()
        if gl_renderer._main_fb is not before:
            width, height = gl_renderer._main_fb_dims
            buffers = ((gl_renderer._main_cb_ms, GL_RGBA), (gl_renderer._main_db_ms, GL_DEPTH_COMPONENT24))
            for buffer, storage in buffers:
                glBindRenderbuffer(GL_RENDERBUFFER, buffer)
                glRenderbufferStorageMultisample(GL_RENDERBUFFER, samples, storage, width, height)

    gl_renderer._configure_main_framebuffer = configure_with_samples


# The smallest depth offset pyrender's mesh.frag applies before comparing with a shadow map, as a
# fraction of the light camera's depth range.
_PYRENDER_MIN_SHADOW_BIAS = 1e-4


def make_light_shadow_texture(pyrender, light) -> None:
    """Give a light its shadow map now, sampled with clamp-to-border.

    pyrender makes shadow maps on first use with the glTF default sampler, REPEAT: a point outside the
    light's shadow camera reads the map from its opposite side and falls in a copied shadow. Its border is
    the far depth, so clamped to the border such a point is lit, which ``focus_shadow_maps`` relies on.
    """
    from OpenGL.GL import GL_CLAMP_TO_BORDER
    light._generate_shadow_texture()
    light.shadow_texture.sampler = pyrender.Sampler(wrapS=GL_CLAMP_TO_BORDER, wrapT=GL_CLAMP_TO_BORDER)


def focus_shadow_maps(pyrender, gl_renderer, focus) -> None:
    """Fit each light's shadow camera to the sphere ``focus()`` returns, ``(center_m, radius_m)`` in world
    coordinates, instead of pyrender's fit to the whole scene.

    pyrender spreads a directional light's map over twice the scene's diagonal, here the room, pooled
    meshes included: a 256-px map then has texels of several centimetres, the fingers cast nothing and
    the table shows acne stripes. Fitted to the region around the object, texels are ~2 mm and the hand
    and object cast contact shadows; beyond the sphere surfaces are lit without shadows (lights need
    ``make_light_shadow_texture``). A spot light's map is narrowed to the sphere, never widened.
    ``focus()`` returning None keeps pyrender's fit.
    """
    default = gl_renderer._get_light_cam_matrices

    def light_cam_matrices(scene, light_node, flags):
        sphere = focus()
        light = light_node.light
        if sphere is None or not isinstance(light, (pyrender.DirectionalLight, pyrender.SpotLight)):
            return default(scene, light_node, flags)
        center, radius = np.asarray(sphere[0], float), float(sphere[1])
        world_from_light = scene.get_pose(light_node).copy()
        axis = -world_from_light[:3, 2]  # lights shine down their -z axis
        map_px = light.shadow_texture.width  # made before any shadow pass (make_light_shadow_texture, or pyrender)
        # pyrender's shader offsets depths by a fixed fraction of the light camera's depth range
        # (1e-4 facing the light, 1e-3 grazing). Its own range, 10x the scene's diagonal, makes that
        # centimetres and lifts shadows off contacts; too short a range gives acne stripes. So pick the
        # range for which the offset is one shadow-map texel at the sphere.
        if isinstance(light, pyrender.DirectionalLight):
            texel_m = 2 * radius / map_px
            depth_range_m = texel_m / _PYRENDER_MIN_SHADOW_BIAS
            world_from_light[:3, 3] = center - axis * (depth_range_m - radius)
            camera = pyrender.OrthographicCamera(xmag=radius, ymag=radius, znear=1e-3, zfar=depth_range_m)
        else:
            to_center = center - world_from_light[:3, 3]
            distance = float(np.linalg.norm(to_center))
            fov = float(np.clip(2 * light.outerConeAngle + np.pi / 16.0, 0.0, np.pi))  # pyrender's
            if distance > radius:
                off_axis = np.arccos(np.clip(to_center @ axis / distance, -1.0, 1.0))
                fov = min(fov, 2.0 * (off_axis + np.arcsin(radius / distance)) + 1e-3)
            far = distance + radius
            # Perspective depth: the offset is one texel (distance * fov / map_px) at the sphere's centre
            # when 1/near - 1/far = fov / (map_px * bias).
            near = 1.0 / (1.0 / far + fov / (map_px * _PYRENDER_MIN_SHADOW_BIAS))
            camera = pyrender.PerspectiveCamera(yfov=fov, aspectRatio=1.0, znear=near, zfar=far)
        return np.linalg.inv(world_from_light), camera.get_projection_matrix()

    gl_renderer._get_light_cam_matrices = light_cam_matrices


def make_offscreen_renderer(width_px: int, height_px: int, msaa_samples: int = 4):
    """pyrender's OffscreenRenderer, with uniform caching and visible-only sorting (same pixels, less
    Python per frame) and ``msaa_samples``, or a one-line error naming what is missing."""
    pyrender = import_pyrender()
    try:
        offscreen = pyrender.OffscreenRenderer(width_px, height_px)
    except Exception as exc:
        raise DiscoposeError(f"cannot create an offscreen OpenGL context with "
                             f"PYOPENGL_PLATFORM={os.environ.get('PYOPENGL_PLATFORM')} "
                             f"({type(exc).__name__}: {exc}); {APT_HINT}") from None
    _install_uniform_cache(pyrender, offscreen._renderer)
    _sort_visible_mesh_nodes_only(offscreen._renderer)
    _set_msaa_samples(offscreen._renderer, msaa_samples)
    # A renderer dropped without close() is finalized by the garbage collector, which may run in the middle of
    # another renderer's frame. pyrender's finalizers then broke that one: OffscreenRenderer's terminates the EGL
    # display every context in the process shares, and its inner Renderer's deletes its framebuffers by name in
    # whatever context is current, where framebuffer 1 is the other renderer's (GL_INVALID_OPERATION in
    # glBindFramebuffer, seen in the test suite). Collected, it releases its own context and nothing else.
    offscreen._renderer.delete = _finalized_with_its_context
    offscreen.delete = types.MethodType(release_offscreen_renderer, offscreen)
    return offscreen


def _finalized_with_its_context() -> None:
    """The inner Renderer's delete, as its finalizer calls it: nothing; release_offscreen_renderer deletes its
    GL objects with their own context current."""


def _egl_address(handle) -> int:
    return ctypes.cast(handle, ctypes.c_void_p).value or 0


def release_offscreen_renderer(renderer) -> None:
    """Delete an OffscreenRenderer's GL objects and context without ``eglTerminate``; safe to call again,
    and at any moment: the context current before (another renderer's, when the garbage collector runs this
    in the middle of its frame) is current again after.

    pyrender's ``delete()`` terminates the EGL display, which every context in the process shares,
    so any other renderer alive in the process would fail with EGL_BAD_DISPLAY afterwards.
    """
    platform = getattr(renderer, "_platform", None)
    if platform is None or getattr(renderer, "_released", False):
        return
    renderer._released = True
    display = getattr(platform, "_egl_display", None)
    if display is None:  # not EGL (e.g. osmesa): pyrender's own delete, the inner Renderer's included
        vars(renderer._renderer).pop("delete", None)  # make_offscreen_renderer's finalizer guard
        type(renderer).delete(renderer)
        return
    from OpenGL.EGL import (EGL_DRAW, EGL_NO_CONTEXT, EGL_NO_SURFACE, EGL_READ, eglDestroyContext,
                            eglGetCurrentContext, eglGetCurrentDisplay, eglGetCurrentSurface, eglMakeCurrent)
    previous = (eglGetCurrentDisplay(), eglGetCurrentSurface(EGL_DRAW), eglGetCurrentSurface(EGL_READ),
                eglGetCurrentContext())
    platform.make_current()
    type(renderer._renderer).delete(renderer._renderer)
    eglMakeCurrent(display, EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT)
    eglDestroyContext(display, platform._egl_context)
    if _egl_address(previous[3]) not in (0, _egl_address(platform._egl_context)):
        eglMakeCurrent(*previous)
    platform._egl_context = None
    platform._egl_display = None
