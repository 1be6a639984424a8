"""A cheap USB webcam: lens distortion, blur, exposure, white balance, sensor noise, tone curve, JPEG.

Pure numpy/cv2 functions of explicit parameters and Generators, so they serve both the realistic
proxy test set (:mod:`discopose.realistic.pathtraced`) and, later, training augmentations (which would
first move this module below ``datasets/``: nothing that trains imports ``realistic/``).

Geometry: :func:`distort_image` turns an undistorted pinhole image into the image of a camera with
OpenCV distortion (same optical centre and axes), so that ``CameraModel(K, dist_coeffs)`` describes the
result exactly. Photometry: :func:`apply_webcam` works on 8-bit sRGB images, internally in linear light
where the physics is linear (blur, gains, noise).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from discopose._errors import ConfigError
from discopose.camera import CameraModel
from discopose.config import check_range

# cv2.undistortPoints' default 5 iterations leave tenths of a pixel at strongly distorted corners.
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12)
_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)


@dataclass
class WebcamConfig:
    """Ranges ``(min, max)``, each drawn uniformly per camera and sample, of a webcam's optics and image
    pipeline. Defaults span consumer USB webcams in indoor light."""

    # OpenCV radial distortion of normalized image coordinates; k1 < 0 is barrel distortion.
    k1: tuple[float, float] = (-0.25, 0.0)
    k2: tuple[float, float] = (0.0, 0.1)
    # Defocus as a Gaussian point spread, sigma in output pixels.
    defocus_sigma_px: tuple[float, float] = (0.3, 1.0)
    # Probability of a straight motion streak, and its length in pixels (direction uniform).
    motion_blur_prob: float = 0.25
    motion_blur_px: tuple[float, float] = (1.5, 5.0)
    # Radiometric falloff at the image corners (fraction lost; 0 = none), quadratic in the radius.
    vignetting: tuple[float, float] = (0.05, 0.35)
    # Auto-exposure error: multiplies linear intensity.
    exposure_gain: tuple[float, float] = (0.8, 1.4)
    # Auto-white-balance error: red and blue gains relative to green.
    white_balance_gain: tuple[float, float] = (0.88, 1.12)
    # Electrons a pixel collects at the white point (shot noise) and the read noise in electrons.
    full_well_e: tuple[float, float] = (1500.0, 8000.0)
    read_noise_e: tuple[float, float] = (2.0, 8.0)
    # Tone curve: exponent applied to the sRGB-encoded value (< 1 brightens mid-tones), and saturation.
    tone_gamma: tuple[float, float] = (0.85, 1.15)
    saturation: tuple[float, float] = (0.8, 1.2)
    # The image processor's unsharp mask: amount (0 = off) at a 1 px radius.
    sharpen: tuple[float, float] = (0.0, 0.6)
    jpeg_quality: tuple[int, int] = (55, 90)

    def __post_init__(self):
        check_range("webcam.k1", self.k1, -1.0, 1.0)
        check_range("webcam.k2", self.k2, -1.0, 1.0)
        check_range("webcam.defocus_sigma_px", self.defocus_sigma_px, 0.0, 20.0)
        check_range("webcam.motion_blur_prob", self.motion_blur_prob, 0.0, 1.0)
        check_range("webcam.motion_blur_px", self.motion_blur_px, 0.0, 100.0)
        check_range("webcam.vignetting", self.vignetting, 0.0, 0.95)
        check_range("webcam.exposure_gain", self.exposure_gain, 0.05, 20.0)
        check_range("webcam.white_balance_gain", self.white_balance_gain, 0.1, 10.0)
        check_range("webcam.full_well_e", self.full_well_e, 1.0)
        check_range("webcam.read_noise_e", self.read_noise_e, 0.0)
        check_range("webcam.tone_gamma", self.tone_gamma, 0.1, 10.0)
        check_range("webcam.saturation", self.saturation, 0.0, 5.0)
        check_range("webcam.sharpen", self.sharpen, 0.0, 5.0)
        check_range("webcam.jpeg_quality", self.jpeg_quality, 1, 100)

    def to_dict(self) -> dict:
        return asdict(self)


def sample_webcam(rng: np.random.Generator, config: WebcamConfig) -> dict:
    """One webcam's drawn parameters (JSON-able): ``dist_coeffs`` (OpenCV order k1, k2, p1, p2, k3), blur,
    vignetting, gains, noise, tone curve, sharpening, JPEG quality and the seed of its noise."""
    uniform = lambda bounds: float(rng.uniform(*bounds))  # noqa: E731
    motion = rng.random() < config.motion_blur_prob
    return {
        "dist_coeffs": [uniform(config.k1), uniform(config.k2), 0.0, 0.0, 0.0],
        "defocus_sigma_px": uniform(config.defocus_sigma_px),
        "motion_blur_px": uniform(config.motion_blur_px) if motion else 0.0,
        "motion_blur_angle_rad": uniform((0.0, np.pi)),
        "vignetting": uniform(config.vignetting),
        "exposure_gain": uniform(config.exposure_gain),
        "white_balance_gains": [uniform(config.white_balance_gain), 1.0, uniform(config.white_balance_gain)],
        "full_well_e": uniform(config.full_well_e),
        "read_noise_e": uniform(config.read_noise_e),
        "tone_gamma": uniform(config.tone_gamma),
        "saturation": uniform(config.saturation),
        "sharpen": uniform(config.sharpen),
        "jpeg_quality": int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1)),
        "noise_seed": int(rng.integers(2**31)),
    }


# ------------------------------------------------------------------------------------------ geometry
def distorted_camera(camera: CameraModel, params: dict) -> CameraModel:
    """``camera`` (its K, size and pose) with the webcam's lens distortion ``params["dist_coeffs"]``."""
    return CameraModel(camera.name, camera.width_px, camera.height_px, camera.K.copy(),
                       np.asarray(params["dist_coeffs"], float), camera.world_from_camera, meta=dict(camera.meta))


def _undistorted_rays(camera: CameraModel, pixels: np.ndarray) -> np.ndarray:
    """Normalized undistorted image coordinates (N, 2) of pixel positions (N, 2) of ``camera``."""
    points = np.asarray(pixels, np.float64).reshape(-1, 1, 2)
    return cv2.undistortPoints(points, camera.K, camera.dist_coeffs, criteria=_UNDISTORT_CRITERIA).reshape(-1, 2)


def check_distortion(camera: CameraModel) -> None:
    """Refuse (:class:`ConfigError`) a radial distortion that folds back before it reaches the image
    corners: the map r -> r (1 + k1 r^2 + k2 r^4 + k3 r^6) of undistorted to distorted radius (normalized
    coordinates) must rise monotonically until it covers the image, or rays have no unique pixel."""
    k1, k2 = camera.dist_coeffs[:2]
    k3 = camera.dist_coeffs[4] if camera.dist_coeffs.size > 4 else 0.0
    corners = np.array([[-0.5, -0.5], [camera.width_px - 0.5, -0.5], [-0.5, camera.height_px - 0.5],
                        [camera.width_px - 0.5, camera.height_px - 0.5]])
    image_radius = float(np.linalg.norm((corners - camera.K[:2, 2]) / np.diag(camera.K)[:2], axis=1).max())
    radius = np.linspace(0.0, 10.0 * image_radius, 4096)
    r2 = radius ** 2
    distorted = radius * (1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3)
    rising = 1 + 3 * k1 * r2 + 5 * k2 * r2 ** 2 + 7 * k3 * r2 ** 3 > 0
    covered = np.flatnonzero(distorted >= image_radius)
    if not covered.size or not rising[:covered[0] + 1].all():
        raise ConfigError(f"camera {camera.name!r}: distortion k1={k1:g}, k2={k2:g} folds back inside the image (the "
                          "lens map is not monotonic there); narrow webcam.k1/webcam.k2 or the field of view")


def pinhole_cover(camera: CameraModel, margin_px: float = 2.0) -> CameraModel:
    """The smallest undistorted pinhole camera, with square pixels (``max(fx, fy)``) and its principal point
    at the image centre, at the same optical centre and axes as ``camera``, whose image holds every ray of
    ``camera``'s image plus ``margin_px`` (room for interpolation). Render this one, then
    :func:`distort_image` into ``camera``: ``camera``'s principal point, aspect and distortion are then
    exact however the renderer handles them, as long as it renders a centred square-pixel pinhole."""
    check_distortion(camera)
    width, height = camera.width_px, camera.height_px
    # Pixel edges (OpenCV pixel centres are integers): the whole area each border pixel covers.
    us = np.linspace(-0.5, width - 0.5, max(2, width // 4))
    vs = np.linspace(-0.5, height - 0.5, max(2, height // 4))
    border = np.concatenate([np.stack([us, np.full_like(us, edge)], 1) for edge in (-0.5, height - 0.5)]
                            + [np.stack([np.full_like(vs, edge), vs], 1) for edge in (-0.5, width - 0.5)])
    rays = np.abs(_undistorted_rays(camera, border))
    focal = float(max(camera.K[0, 0], camera.K[1, 1]))
    cover_w = int(np.ceil(2 * (focal * rays[:, 0].max() + margin_px)))
    cover_h = int(np.ceil(2 * (focal * rays[:, 1].max() + margin_px)))
    K = np.array([[focal, 0.0, (cover_w - 1) / 2], [0.0, focal, (cover_h - 1) / 2], [0.0, 0.0, 1.0]])
    return CameraModel(camera.name, cover_w, cover_h, K, world_from_camera=camera.world_from_camera)


def distortion_maps(source: CameraModel, target: CameraModel) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps (float32, target-sized) from the distorted ``target`` camera's pixels to the pixels
    of the undistorted pinhole ``source`` (same optical centre and axes) that see the same ray."""
    if np.any(source.dist_coeffs):
        raise ConfigError(f"camera {source.name!r}: the source of distort_image must be an undistorted pinhole")
    return cv2.initInverseRectificationMap(target.K, target.dist_coeffs, np.eye(3), source.K,
                                           (target.width_px, target.height_px), cv2.CV_32FC1)


def distort_image(image: np.ndarray, maps: tuple[np.ndarray, np.ndarray],
                  interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """``image`` of the pinhole source as the target of :func:`distortion_maps` sees it (``cv2.INTER_NEAREST``
    for depths). A bool mask is interpolated and thresholded at one half, which keeps its edges where they
    were to a fraction of a pixel (nearest would move them by up to half a pixel). Target pixels whose ray
    leaves the source image are 0."""
    image = np.asarray(image)
    if image.dtype == bool:
        return cv2.remap(image.astype(np.float32), *maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT) > 0.5
    return cv2.remap(image, *maps, interpolation, borderMode=cv2.BORDER_CONSTANT)


# ---------------------------------------------------------------------------------------- photometry
def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 decoding of values in [0, 1] (float32)."""
    srgb = np.asarray(srgb, np.float32)
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 encoding; input clipped to [0, 1] (float32)."""
    linear = np.clip(np.asarray(linear, np.float32), 0.0, 1.0)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055).astype(np.float32)


def _motion_kernel(length_px: float, angle_rad: float) -> np.ndarray:
    """A normalized line kernel ``length_px`` long at ``angle_rad`` (image axes), antialiased."""
    size = int(np.ceil(length_px)) | 1
    kernel = np.zeros((size * 4, size * 4), np.float32)
    center = np.array([size * 2, size * 2], float)
    offset = 0.5 * length_px * 4 * np.array([np.cos(angle_rad), np.sin(angle_rad)])
    a, b = center - offset, center + offset
    cv2.line(kernel, (int(round(a[0] * 16)), int(round(a[1] * 16))), (int(round(b[0] * 16)), int(round(b[1] * 16))),
             1.0, 4, cv2.LINE_AA, shift=4)
    kernel = cv2.resize(kernel, (size, size), interpolation=cv2.INTER_AREA)
    return kernel / kernel.sum()


def apply_webcam(image_rgb_uint8: np.ndarray, params: dict, rng: np.random.Generator | None = None,
                 K: np.ndarray | None = None) -> np.ndarray:
    """An ideal 8-bit sRGB image (H, W, 3) as the webcam of ``params`` (:func:`sample_webcam`) delivers it.

    ``K`` given: first the lens distortion ``params["dist_coeffs"]`` about that K, same image size (pixels
    whose ray leaves the input turn black; render with :func:`pinhole_cover` and :func:`distort_image` to
    avoid that). Then, in linear light: defocus and motion blur, vignetting, exposure and white-balance
    gains, shot and read noise and sensor clipping; then the sRGB tone curve with ``tone_gamma``,
    saturation, sharpening, and a JPEG round trip. ``rng`` draws the noise (default: seeded by
    ``params["noise_seed"]``). Returns (H, W, 3) uint8 RGB.
    """
    image = np.asarray(image_rgb_uint8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"apply_webcam needs an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    if K is not None and np.any(params["dist_coeffs"]):
        pinhole = CameraModel("webcam", width, height, K)
        image = distort_image(image, distortion_maps(pinhole, distorted_camera(pinhole, params)))
    rng = rng if rng is not None else np.random.default_rng(params["noise_seed"])

    linear = srgb_to_linear(image.astype(np.float32) / 255.0)
    if params["defocus_sigma_px"] > 0:
        linear = cv2.GaussianBlur(linear, (0, 0), params["defocus_sigma_px"])
    if params["motion_blur_px"] > 0:
        linear = cv2.filter2D(linear, -1, _motion_kernel(params["motion_blur_px"], params["motion_blur_angle_rad"]),
                              borderType=cv2.BORDER_REFLECT)
    v, u = np.mgrid[:height, :width].astype(np.float32)
    center_u, center_v = (width - 1) / 2, (height - 1) / 2
    radius2 = ((u - center_u) ** 2 + (v - center_v) ** 2) / (center_u ** 2 + center_v ** 2)  # 1 at the corners
    gain = params["exposure_gain"] * (1.0 - params["vignetting"] * radius2)
    linear = linear * gain[..., None] * np.asarray(params["white_balance_gains"], np.float32)

    # Shot noise (Poisson, as its Gaussian limit) on the electrons collected, plus read noise.
    full_well = params["full_well_e"]
    electrons = np.clip(linear, 0.0, None) * full_well
    sigma = np.sqrt(electrons + params["read_noise_e"] ** 2) / full_well
    linear = np.clip(linear + sigma * rng.standard_normal(linear.shape, dtype=np.float32), 0.0, 1.0)

    encoded = linear_to_srgb(linear) ** np.float32(params["tone_gamma"])
    luma = (encoded @ _LUMA)[..., None]
    encoded = luma + params["saturation"] * (encoded - luma)
    if params["sharpen"] > 0:
        encoded = encoded + params["sharpen"] * (encoded - cv2.GaussianBlur(encoded, (0, 0), 1.0))
    out = np.clip(np.round(encoded * 255.0), 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, params["jpeg_quality"]])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
