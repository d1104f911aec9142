"""Mutual-information registration: affine, then a cubic B-spline free-form deformation.

The classic intensity-based multimodal baseline of the paper's Table 1 ("MI", after Viola & Wells
1997), in the form every registration toolkit ships: Mattes mutual information (Mattes et al.,
IEEE TMI 22(1), 2003) maximised over an affine transform and then over a B-spline FFD (Rueckert et
al., IEEE TMI 18(8), 1999), multi-resolution, with SimpleITK's ``ImageRegistrationMethod``.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from fusionbench.data.io import as_image, check_same_shape
from fusionbench.methods import RegistrationMethod, register_method
from fusionbench.warp import warp

from .regions import body_region


def _to_sitk(img: np.ndarray) -> sitk.Image:
    # Unit spacing and zero origin make physical coordinates equal to (column, row) indices.
    return sitk.GetImageFromArray(img.astype(np.float32))


def transform_to_flow(transform: sitk.Transform, shape: tuple[int, int]) -> np.ndarray:
    """Dense displacement (2, H, W), rows then columns, of a SimpleITK fixed-to-moving transform.

    SimpleITK maps a fixed-image point x to the moving-image point T(x) and resamples the moving
    image there, which is our ``warp`` convention with ``flow = T(x) - x``; its vectors are (x, y) =
    (column, row), so the channels are swapped.
    """
    ref = sitk.Image([shape[1], shape[0]], sitk.sitkFloat32)
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, ref.GetSize(),
                                              ref.GetOrigin(), ref.GetSpacing(), ref.GetDirection())
    vec = sitk.GetArrayFromImage(field)  # (H, W, 2) as (dx, dy)
    return np.ascontiguousarray(np.stack([vec[..., 1], vec[..., 0]]).astype(np.float32))


@register_method("mi-bspline", kind="registration",
                 reference="Viola & Wells, IJCV 1997; Mattes et al., IEEE TMI 2003 (Mattes MI, "
                           "affine + B-spline FFD, SimpleITK)")
class MIBSpline(RegistrationMethod):
    """Affine then B-spline registration maximising Mattes mutual information.

    The defaults were chosen on the phantom's validation and train splits; the measurements behind
    each are in docs/baselines.md (``mi-bspline``).

    Parameters
    ----------
    bins : int
        Histogram bins of the Mattes MI (32; the usual 50 registers the phantom worse).
    sampling : float
        Share of fixed-image pixels sampled at random per iteration (fixed seed: deterministic).
    mesh : int
        B-spline control-mesh cells per axis. 4 (64 px spacing at 256²): finer meshes let the
        deformation follow the PAT's speckle and vessels, which the MRI does not share. On the
        phantom the affine stage does nearly all the work.
    shrink, smooth : tuple
        Pyramid shrink factors and Gaussian smoothing sigmas (pixels) per level.
    affine_iterations, bspline_iterations : int
        Optimiser iteration caps per level. Both stages use regular-step gradient descent with
        steps measured in pixels of displacement (L-BFGS-B on the B-spline takes long steps into
        wrong optima).
    bspline_step : float
        Largest first step (pixels) of the B-spline stage; small steps and few iterations keep
        the affine stage's gain instead of undoing it.
    moving_sigma : float
        Gaussian smoothing (pixels) of the moving image before registration; PAT's microvascular
        speckle otherwise dominates its joint histogram with the MRI. Set 0 for same-modality
        pairs, where smoothing one image only biases MI. The returned warped image is the
        unsmoothed moving image.
    mask_margin : int or None
        Measure the metric only inside the fixed image's body dilated by this many pixels
        (:func:`~baselines.registration.regions.body_region`); None: the whole image. On the
        phantom the flat water around the body otherwise dominates the joint histogram.
    seed : int
        Seed of the random metric sampling.
    threads : int
        ITK threads. One by default: results are then bit-for-bit repeatable (threads sum the
        metric in varying order), and the harness parallelises over cases instead.
    """

    def __init__(self, bins: int = 32, sampling: float = 0.2, mesh: int = 4,
                 shrink: tuple[int, ...] = (4, 2, 1), smooth: tuple[float, ...] = (2.0, 1.0, 0.0),
                 affine_iterations: int = 200, bspline_iterations: int = 20, bspline_step: float = 0.3,
                 mask_margin: int | None = 10, moving_sigma: float = 2.0, seed: int = 1, threads: int = 1):
        if moving_sigma < 0:
            raise ValueError(f"moving_sigma must be >= 0, got {moving_sigma}")
        self.bins, self.sampling, self.mesh, self.moving_sigma = bins, sampling, mesh, moving_sigma
        self.shrink, self.smooth = tuple(shrink), tuple(smooth)
        self.affine_iterations, self.bspline_iterations, self.seed = affine_iterations, bspline_iterations, seed
        self.threads, self.mask_margin, self.bspline_step = threads, mask_margin, bspline_step

    def registration_method(self, fixed_mask: sitk.Image | None = None) -> sitk.ImageRegistrationMethod:
        """A SimpleITK registration with this method's metric (Mattes MI, its bins, random sampling
        share and seed), pyramid and threads; the metric taken inside ``fixed_mask`` when given."""
        reg = sitk.ImageRegistrationMethod()
        if fixed_mask is not None:
            reg.SetMetricFixedMask(fixed_mask)
        reg.SetNumberOfThreads(self.threads)
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=self.bins)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(self.sampling, self.seed)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetShrinkFactorsPerLevel(list(self.shrink))
        reg.SetSmoothingSigmasPerLevel(list(self.smooth))
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        return reg

    def register(self, moving: np.ndarray, fixed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        moving, fixed = as_image(moving, "moving"), as_image(fixed, "fixed")
        check_same_shape(moving=moving, fixed=fixed)
        # The pyramid's smoothing, the metric and the initialiser run on ITK's global default
        # thread count, not the registration's: with several threads their float sums change
        # with scheduling, and so did the result from one call to the next.
        threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(self.threads)
        try:
            return self._register(moving, fixed)
        finally:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)

    def _register(self, moving: np.ndarray, fixed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fixed_s = _to_sitk(fixed)
        moving_s = _to_sitk(ndi.gaussian_filter(moving, self.moving_sigma) if self.moving_sigma else moving)
        mask = None
        if self.mask_margin is not None:
            mask = sitk.GetImageFromArray(body_region(fixed, self.mask_margin).astype(np.uint8))

        affine = sitk.CenteredTransformInitializer(fixed_s, moving_s, sitk.AffineTransform(2),
                                                   sitk.CenteredTransformInitializerFilter.GEOMETRY)
        reg = self.registration_method(mask)
        reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4,
                                                     numberOfIterations=self.affine_iterations,
                                                     gradientMagnitudeTolerance=1e-6)
        # Translation is in pixels while the matrix is unitless: scale steps by the parameters' effect.
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetInitialTransform(affine, inPlace=True)
        reg.Execute(fixed_s, moving_s)

        bspline = sitk.BSplineTransformInitializer(fixed_s, [self.mesh, self.mesh], order=3)
        reg = self.registration_method(mask)
        reg.SetOptimizerAsRegularStepGradientDescent(learningRate=self.bspline_step, minStep=1e-3,
                                                     numberOfIterations=self.bspline_iterations,
                                                     gradientMagnitudeTolerance=1e-6)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetMovingInitialTransform(affine)
        reg.SetInitialTransform(bspline, inPlace=True)
        reg.Execute(fixed_s, moving_s)

        composite = sitk.CompositeTransform([affine, bspline])
        flow = transform_to_flow(composite, fixed.shape)
        return warp(moving, flow), flow
