"""Property-based ("fuzz") tests of every metric in :data:`fusionbench.metrics.METRICS` and of the
image reader :mod:`fusionbench.data.io`.

Inputs are random small images (1..32 pixels a side, non-square) of every accepted dtype, plus the
degenerate ones real pipelines meet: constant images, near-constant ones (one pixel off by one
grey level or by 1e-7), two-level images, all-zero label maps and single-pixel objects.

Properties: only the documented exceptions (``ValueError`` / ``ImageError`` with a clear message);
only documented warnings (``RuntimeWarning`` named after the metric); no NaN except where a
docstring documents it; values inside each metric's documented range (``METRICS[...].range`` and
the docstrings); cheap documented invariants (symmetry in the two sources, the value for
``f == a == b``, DSC(x, x) = 100, ...).
"""
from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fusionbench.data.io import ColourImageError, ImageError, as_image, read_array, read_image, write_image
from fusionbench.metrics import METRICS, registration, segmentation
from fusionbench.metrics._conventions import CONVENTIONS, to_255
from fusionbench.metrics.fusion import SUITE_COLUMNS, suite_columns

# FUSIONBENCH_FUZZ_SCALE=20 multiplies every example count, for a longer bug hunt.
_SCALE = max(1, int(os.environ.get("FUSIONBENCH_FUZZ_SCALE", "1")))
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]


def examples(n: int) -> settings:
    return settings(max_examples=n * _SCALE, deadline=None, suppress_health_check=_HEALTH)


FAST = examples(40)
SOME = examples(20)

# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------

IMAGE_DTYPES = ("uint8", "uint16", "float32", "float64", "bool")
KINDS = ("random", "noise", "constant", "near_constant", "two_levels")


def shapes(min_side: int = 1, max_side: int = 24):
    side = st.integers(min_side, max_side)
    return st.tuples(side, side)


def _elements(dtype: np.dtype):
    if dtype == np.bool_:
        return st.booleans()
    if np.issubdtype(dtype, np.integer):
        return st.integers(0, int(np.iinfo(dtype).max))
    return st.floats(0.0, 1.0, width=32 if dtype == np.float32 else 64)


@st.composite
def gray_images(draw, shape, dtypes=IMAGE_DTYPES, kinds=KINDS):
    """A gray image of ``shape`` that :func:`as_image` accepts."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    kind = draw(st.sampled_from(kinds))
    elements = _elements(dtype)
    if kind == "random":
        if np.issubdtype(dtype, np.floating) and draw(st.booleans()):
            # 8-bit data as the pipelines hold it: k / 255
            levels = draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, 255)))
            return (levels / 255.0).astype(dtype)
        return draw(hnp.arrays(dtype, shape, elements=elements))
    if kind == "noise":
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        u = rng.random(shape)
        if dtype == np.bool_:
            return u < 0.5
        if np.issubdtype(dtype, np.integer):
            return np.round(u * np.iinfo(dtype).max).astype(dtype)
        return u.astype(dtype)
    if kind == "two_levels":
        v0, v1 = draw(elements), draw(elements)
        pattern = draw(hnp.arrays(np.bool_, shape))
        return np.where(pattern, v1, v0).astype(dtype)
    c = draw(elements)
    arr = np.full(shape, c, dtype=dtype)
    if kind == "near_constant":
        i, j = draw(st.integers(0, shape[0] - 1)), draw(st.integers(0, shape[1] - 1))
        if dtype == np.bool_:
            arr[i, j] = not c
        elif np.issubdtype(dtype, np.integer):
            arr[i, j] = c + 1 if c < np.iinfo(dtype).max else c - 1
        else:
            step = draw(st.sampled_from([1e-7, 1.0 / 255.0]))
            arr[i, j] = c + step if c + step <= 1.0 else c - step
    return arr


@st.composite
def triples(draw, min_side: int = 1, max_side: int = 24):
    """(a, b, f) of one shape; sometimes f == a, a == b or all three equal."""
    shape = draw(shapes(min_side, max_side))
    a = draw(gray_images(shape))
    relation = draw(st.sampled_from(["independent", "independent", "f_is_a", "a_is_b", "all_equal"]))
    b = a.copy() if relation in ("a_is_b", "all_equal") else draw(gray_images(shape))
    f = a.copy() if relation in ("f_is_a", "all_equal") else draw(gray_images(shape))
    return a, b, f


def call(fn, *args, prefix: str, **kw):
    """``fn(*args, **kw)`` with every warning recorded; only documented ones are allowed.

    The metrics warn (``RuntimeWarning``, message starting with the metric's name) on degenerate
    inputs; anything else (e.g. numpy's "invalid value encountered") means an unhandled 0/0.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = fn(*args, **kw)
    for w in caught:
        assert issubclass(w.category, RuntimeWarning), f"unexpected {w.category.__name__}: {w.message}"
        assert str(w.message).startswith(prefix), f"undocumented warning: {w.message}"
    return value, [str(w.message) for w in caught]


# --------------------------------------------------------------------------------------------
# Fusion metrics: documented ranges under every convention
# --------------------------------------------------------------------------------------------

FUSION_PREFIX = {"MI": "mi", "VIF": "vif", "Qabf": "qabf", "SF": "sf", "SSIM": "ssim", "FMI_pixel": "fmi",
                 "FMI_dct": "fmi", "FMI_w": "fmi", "EN": "en", "SD": "sd", "AG": "ag", "PSNR": "psnr"}
FMI_COLUMNS = ("FMI_pixel", "FMI_dct", "FMI_w")
THREE_INPUT = ("MI", "VIF", "Qabf", "SSIM", "PSNR") + FMI_COLUMNS
# Nelsen's mixture is not a true joint distribution when phi > 1 ("a single window may fall
# slightly outside" [0, 1]); rounding-level excursions only.
FMI_TOL = 1e-9
LN2 = math.log(2.0)
INF = math.inf


def fusion_range(column: str, convention: str) -> tuple[float, float]:
    """The documented range (METRICS[...].range and the function's docstring)."""
    if column == "MI":
        return (0.0, 16.0) if convention in ("paper", "tang") else (0.0, 16.0 * LN2)  # bits / nats
    if column == "VIF":
        return 0.0, INF
    if column == "Qabf":
        return 0.0, 0.9754
    if column == "SF":
        return 0.0, math.sqrt(2.0) * (1.0 if convention == "paper" else 255.0)
    if column == "SSIM":
        return (-1.0, 1.0) if convention == "tang" else (-2.0, 2.0)  # tang: the mean, others: the sum
    if column in FMI_COLUMNS:
        return -FMI_TOL, 1.0 + FMI_TOL
    if column == "EN":
        return 0.0, 8.0
    if column == "SD":
        return 0.0, 127.5
    if column == "AG":
        return 0.0, INF
    if column == "PSNR":
        if convention == "tang":
            return 20.0 * math.log10(255.0), INF  # paper + 48.13 dB, paper >= 0
        if convention == "cddfuse":
            return -INF, INF  # peak max(F) can be below the error
        return 0.0, INF
    raise AssertionError(column)


def min_side(column: str, convention: str) -> int:
    """The smallest image side each metric documents."""
    if column in ("SF", "AG"):
        return 2
    if column == "SSIM":
        return {"vifb": 11, "tang": 1}.get(convention, 7)
    if column in FMI_COLUMNS:
        return 3
    return 1


def max_side(column: str) -> int:
    return 10 if column in FMI_COLUMNS else 24


def fusion_call(column, convention, a, b, f):
    return call(METRICS[f"fusion.{column}"].function, a, b, f, convention=convention,
                prefix=f"{FUSION_PREFIX[column]}: ")


def same_on_255(x, y) -> bool:
    return bool(np.array_equal(to_255(as_image(x)), to_255(as_image(y))))


DEFINED = [(c, conv) for c in SUITE_COLUMNS for conv in CONVENTIONS if c in suite_columns(conv)]
UNDEFINED = [(c, conv) for c in SUITE_COLUMNS for conv in CONVENTIONS if c not in suite_columns(conv)]


def _ids(cases):
    return [f"{c}-{v}" for c, v in cases]


@pytest.mark.parametrize(("column", "convention"), DEFINED, ids=_ids(DEFINED))
@examples(20)
@given(data=st.data())
def test_fusion_metric_is_finite_and_in_documented_range(column, convention, data):
    a, b, f = data.draw(triples(min_side(column, convention), max_side(column)), label="a, b, f")
    value, messages = fusion_call(column, convention, a, b, f)
    assert isinstance(value, float)
    assert not math.isnan(value)
    if column in FMI_COLUMNS:
        # ranges of FMI: test_fmi_in_unit_interval
        assert math.isfinite(value)
        return
    lo, hi = fusion_range(column, convention)
    assert lo <= value <= hi, f"{column}[{convention}] = {value!r} outside [{lo}, {hi}]"
    if column != "PSNR":
        assert math.isfinite(value)
    elif value == INF:
        # documented: +inf only when f equals both sources (on the 0-255 scale the toolboxes see,
        # where values within 1e-4 of an 8-bit level are that level)
        assert same_on_255(a, f) and same_on_255(b, f)
        assert any("PSNR is +inf" in m for m in messages)
    elif value == -INF:
        # documented for cddfuse: an all-zero fused image (its peak) on that scale
        assert convention == "cddfuse" and not np.any(to_255(as_image(f)))
        assert any("PSNR is -inf" in m for m in messages)


# Inputs found by fuzzing. The DCT of a constant image was its DC term plus ~1e-16 rounding noise,
# which per-window min-max scaling turned into arbitrary windows (1.1016 and -1.7e-8 before the
# DCT feature set exact zeros to 0). Nelsen's mixture is no distribution when phi > 1, so
# near-identical near-constant windows can score a little above 1 (docstring of fmi): 1.0000049
# here, at most 1.7e-5 above 1 in a longer random search.
_FMI_DCT_CONSTANT = (np.full((10, 4), 49, np.uint8), np.full((10, 4), 49, np.uint8),
                     np.full((10, 4), 130, np.uint8))
_FMI_DCT_NEGATIVE = (np.array([[162, 69, 10, 4], [207, 233, 155, 186], [139, 238, 208, 1], [219, 9, 186, 45],
                                [220, 138, 76, 108], [7, 32, 171, 165], [157, 98, 254, 250]], np.uint8),) * 2 + (
    np.ones((7, 4), bool),)
_FMI_W_NEAR_CONSTANT = (np.array([[4, 4, 5], [4, 4, 4], [4, 4, 4]], np.uint8),
                        np.array([[27, 27, 28], [27, 27, 27], [27, 27, 27]], np.uint8),
                        np.array([[4, 4, 5], [4, 4, 4], [4, 4, 4]], np.uint8))
FMI_ABOVE_ONE = 1e-4  # the documented slack above 1
FMI_CASES = [pytest.param(c, conv, id=f"{c}-{conv}") for c, conv in DEFINED if c in FMI_COLUMNS]


@pytest.mark.parametrize(("column", "convention"), FMI_CASES)
@examples(20)
@example(abf=_FMI_DCT_CONSTANT)
@example(abf=_FMI_DCT_NEGATIVE)
@example(abf=_FMI_W_NEAR_CONSTANT)
@given(abf=triples(3, 10))
def test_fmi_in_unit_interval(column, convention, abf):
    value, _ = fusion_call(column, convention, *abf)
    assert -FMI_TOL <= value <= 1.0 + FMI_ABOVE_ONE, f"{column}[{convention}] = {value!r} outside [0, 1]"


@pytest.mark.parametrize(("column", "convention"), UNDEFINED, ids=_ids(UNDEFINED))
def test_fusion_metric_undefined_by_toolbox_raises(column, convention):
    x = np.random.default_rng(0).random((12, 12))
    with pytest.raises(ValueError, match=rf"the '{convention}' toolbox has no such metric"):
        METRICS[f"fusion.{column}"].function(x, x, x, convention=convention)


@pytest.mark.parametrize("column", SUITE_COLUMNS)
def test_fusion_metric_unknown_convention_raises(column):
    x = np.random.default_rng(0).random((12, 12))
    with pytest.raises(ValueError, match="unknown convention 'matlab'"):
        METRICS[f"fusion.{column}"].function(x, x, x, convention="matlab")


SIZED = [(c, conv) for c, conv in DEFINED if min_side(c, conv) > 1]


@pytest.mark.parametrize(("column", "convention"), SIZED, ids=_ids(SIZED))
@examples(10)
@given(data=st.data())
def test_fusion_metric_below_minimum_size_raises(column, convention, data):
    minimum = min_side(column, convention)
    small = data.draw(st.integers(1, minimum - 1), label="short side")
    other = data.draw(st.integers(1, 20), label="other side")
    shape = data.draw(st.sampled_from([(small, other), (other, small)]), label="shape")
    a, b, f = (data.draw(gray_images(shape)) for _ in range(3))
    with pytest.raises(ValueError, match=r"too small|smaller than the"):
        fusion_call(column, convention, a, b, f)


@pytest.mark.parametrize("column", THREE_INPUT)
@examples(10)
@given(data=st.data())
def test_fusion_metric_shape_mismatch_raises(column, data):
    shape = data.draw(shapes(12, 16))
    other = (shape[0] + data.draw(st.integers(1, 3)), shape[1])
    imgs = [data.draw(gray_images(shape)) for _ in range(2)] + [data.draw(gray_images(other))]
    order = data.draw(st.permutations(imgs))
    with pytest.raises(ImageError, match="shape mismatch"):
        fusion_call(column, "paper", *order)


@pytest.mark.parametrize("column", SUITE_COLUMNS)
@examples(10)
@given(data=st.data())
def test_fusion_metric_nan_input_raises(column, data):
    shape = data.draw(shapes(12, 16))
    a, b, f = (data.draw(gray_images(shape, dtypes=("float32", "float64"))) for _ in range(3))
    bad = f if column not in THREE_INPUT or data.draw(st.booleans()) else a
    bad[data.draw(st.integers(0, shape[0] - 1)), data.draw(st.integers(0, shape[1] - 1))] = \
        data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    with pytest.raises(ImageError, match="NaN/Inf"):
        fusion_call(column, "paper", a, b, f)


# --------------------------------------------------------------------------------------------
# Fusion metrics: invariants
# --------------------------------------------------------------------------------------------

# Metrics whose two sources enter symmetrically (VIF under mefb picks the source with the smaller
# gain, so ties are broken towards a; FMI is documented as slightly asymmetric).
SYMMETRIC = [(c, conv) for c, conv in DEFINED
             if c in ("MI", "Qabf", "SSIM", "PSNR") or (c == "VIF" and conv != "mefb")]


@pytest.mark.parametrize(("column", "convention"), SYMMETRIC, ids=_ids(SYMMETRIC))
@examples(10)
@given(data=st.data())
def test_fusion_metric_symmetric_in_sources(column, convention, data):
    a, b, f = data.draw(triples(min_side(column, convention), 20), label="a, b, f")
    ab, _ = fusion_call(column, convention, a, b, f)
    ba, _ = fusion_call(column, convention, b, a, f)
    assert ab == pytest.approx(ba, rel=1e-12, abs=1e-12)


@examples(30)
@given(data=st.data())
def test_fusion_identical_images_reach_documented_values(data):
    shape = data.draw(shapes(11, 24))
    x = data.draw(gray_images(shape), label="x")
    # SSIM: 2 (the sum) for f == a == b, Tang's mean 1
    for convention in ("paper", "cddfuse", "vifb"):
        assert fusion_call("SSIM", convention, x, x, x)[0] == pytest.approx(2.0, abs=1e-12)
    assert fusion_call("SSIM", "tang", x, x, x)[0] == pytest.approx(1.0, abs=1e-12)
    # VIF: 2 for f == a == b (a constant source counts 1.0, with its warning). Sheikh's gain
    # g = sigma_12 / (sigma_1^2 + 1e-10) falls short of 1 where the local variance is tiny (one
    # grey level at a window's corner: 1 - 3.6e-6 per source), so 2 holds to 1e-4 for 8-bit data
    # and is an upper bound otherwise (a uint16 image one level off constant scores less).
    v = fusion_call("VIF", "paper", x, x, x)[0]
    assert 0.0 < v <= 2.0 + 1e-12
    if x.dtype in (np.uint8, np.bool_) or same_on_255(x, np.rint(as_image(x) * 255).astype(np.uint8)):
        assert v == pytest.approx(2.0, abs=1e-4)
    # PSNR: +inf with a warning under every convention
    for convention in CONVENTIONS:
        with pytest.warns(RuntimeWarning, match="PSNR is \\+inf"):
            assert METRICS["fusion.PSNR"].function(x, x, x, convention=convention) == INF
    # MI(x; x) is the entropy of x: MI(x, x, x) = 2 EN(x) bits (nats for cddfuse / vifb on 8-bit)
    en = fusion_call("EN", "paper", None, None, x)[0]
    assert fusion_call("MI", "paper", x, x, x)[0] == pytest.approx(2.0 * en, abs=1e-12)
    assert fusion_call("MI", "cddfuse", x, x, x)[0] == pytest.approx(2.0 * LN2 * en, abs=1e-12)


@examples(30)
@given(data=st.data())
def test_fused_only_metrics_of_constant_image_are_zero(data):
    shape = data.draw(shapes(2, 24))
    f = data.draw(gray_images(shape, kinds=("constant",)), label="f")
    for convention in CONVENTIONS:
        for column in ("SF", "EN", "SD", "AG"):
            assert fusion_call(column, convention, None, None, f)[0] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("convention", ["paper", "tang", "vifb", "cddfuse"])
def test_regression_fusion_mi_of_independent_images_is_zero_not_negative(convention):
    # a: last row white, f: last column white (4 x 4). The joint histogram is the product of
    # the marginals (3/4, 1/4) x (3/4, 1/4) -- 9, 3, 3 and 1 of the 16 pixels -- so
    # MI(a; f) = 0 exactly and MI(a, a, f) = 0 under every convention (vifb's min-max
    # normalisation and tang's 254/255 merge leave two levels 0/255 resp. 0/254). The entropy
    # sum H(a) + H(f) - H(a, f) rounded to -2.2e-16 per source, below the documented range.
    a = np.zeros((4, 4), np.uint8)
    a[3, :] = 255
    f = np.zeros((4, 4), np.uint8)
    f[:, 3] = 255
    assert call(METRICS["fusion.MI"].function, a, a, f, convention=convention, prefix="mi: ")[0] == 0.0


# --------------------------------------------------------------------------------------------
# Registration metrics
# --------------------------------------------------------------------------------------------

def _entropy_nats(x: np.ndarray, bins: int = 256) -> float:
    q = np.minimum((x.astype(np.float64) * bins).astype(np.int64), bins - 1)
    p = np.bincount(q.ravel()) / q.size
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


@st.composite
def pairs(draw, min_side: int = 1, max_side: int = 24):
    shape = draw(shapes(min_side, max_side))
    x = draw(gray_images(shape), label="x")
    y = x.copy() if draw(st.integers(0, 3)) == 0 else draw(gray_images(shape), label="y")
    mask = draw(st.one_of(st.none(), hnp.arrays(np.bool_, shape)), label="mask")
    return x, y, mask


def _constant_in(x, mask) -> bool:
    v = as_image(x)
    v = v if mask is None else v[mask]
    return bool(v.max() == v.min())


@FAST
@given(pair=pairs(), bins=st.sampled_from([2, 16, 256]))
def test_registration_similarity_ranges(pair, bins):
    x, y, mask = pair
    if mask is not None and not mask.any():
        for fn in (registration.mi, registration.nmi, registration.ncc):
            with pytest.raises(ImageError, match="mask: selects no pixels"):
                fn(x, y, mask=mask)
        return
    m, _ = call(METRICS["registration.MI"].function, x, y, bins=bins, mask=mask, prefix="mi: ")
    assert 0.0 <= m <= math.log(bins) + 1e-12  # MI <= min(H(X), H(Y)) <= log(bins)
    m_yx, _ = call(registration.mi, y, x, bins=bins, mask=mask, prefix="mi: ")
    assert m == pytest.approx(m_yx, abs=1e-12)
    if _constant_in(x, mask) or _constant_in(y, mask):
        assert m == pytest.approx(0.0, abs=1e-12)
    for normalization in registration.NMI_NORMALIZATIONS:
        n, messages = call(registration.nmi, x, y, bins=bins, normalization=normalization, mask=mask,
                           prefix="nmi: ")
        lo, hi = (1.0, 2.0) if normalization == "studholme" else (0.0, 1.0)
        assert lo <= n <= hi, f"nmi[{normalization}] = {n!r}"
    c, _ = call(METRICS["registration.NCC"].function, x, y, mask=mask, prefix="ncc: ")
    assert -1.0 <= c <= 1.0
    assert c == call(registration.ncc, y, x, mask=mask, prefix="ncc: ")[0]
    if _constant_in(x, mask) or _constant_in(y, mask):
        assert c == 0.0


def test_regression_nmi_studholme_stays_in_its_range():
    # Independent: x has its last row white, y its last column (3 x 3), so the joint histogram is
    # (2/3, 1/3) x (2/3, 1/3), H(X, Y) = H(X) + H(Y) and (H(X) + H(Y)) / H(X, Y) = 1 exactly
    # (the ratio rounded to 0.9999999999999998 before the fix).
    x = np.zeros((3, 3), np.uint8)
    x[2, :] = 255
    y = np.zeros((3, 3), np.uint8)
    y[:, 2] = 255
    assert registration.nmi(x, y, normalization="studholme") == 1.0
    assert registration.nmi(x, y) == 0.0
    # A relabelling: y swaps grey levels 1 and 2 of x, so H(X, Y) = H(X) = H(Y) and the ratio is
    # 2 exactly (it rounded to 2.0000000000000004).
    x = np.array([[0, 0, 0], [1, 1, 2]], np.uint8)
    y = np.array([[0, 0, 0], [2, 2, 1]], np.uint8)
    assert registration.nmi(x, y, normalization="studholme") == 2.0
    assert registration.nmi(x, y) == 1.0


@FAST
@given(pair=pairs())
def test_registration_similarity_of_image_with_itself(pair):
    x, _, mask = pair
    assume(mask is None or mask.any())
    values = as_image(x) if mask is None else as_image(x)[mask]
    assert call(registration.mi, x, x, mask=mask, prefix="mi: ")[0] == pytest.approx(_entropy_nats(values), abs=1e-12)
    assert call(registration.mi, x, x, mask=mask, base=2, prefix="mi: ")[0] == \
        pytest.approx(_entropy_nats(values) / LN2, abs=1e-12)
    constant = bool(values.max() == values.min())
    q = np.minimum((values.astype(np.float64) * 256).astype(np.int64), 255)
    one_bin = bool(q.max() == q.min())
    for normalization in registration.NMI_NORMALIZATIONS:
        full = 2.0 if normalization == "studholme" else 1.0
        if one_bin:  # both "images" constant after binning: 0/0, documented as identical
            with pytest.warns(RuntimeWarning, match="both images are constant"):
                n = registration.nmi(x, x, normalization=normalization, mask=mask)
        else:
            n = call(registration.nmi, x, x, normalization=normalization, mask=mask, prefix="nmi: ")[0]
        assert n == pytest.approx(full, abs=1e-12)
    if constant:
        with pytest.warns(RuntimeWarning, match="ncc: constant image"):
            assert registration.ncc(x, x, mask=mask) == 0.0
    else:
        assert call(registration.ncc, x, x, mask=mask, prefix="ncc: ")[0] == pytest.approx(1.0, abs=1e-9)


@SOME
@given(data=st.data())
def test_registration_similarity_invalid_inputs_raise(data):
    shape = data.draw(shapes(2, 12))
    x = data.draw(gray_images(shape, dtypes=("float32", "float64")))
    y = data.draw(gray_images(shape))
    x[0, 0] = np.nan
    for fn in (registration.mi, registration.nmi, registration.ncc):
        with pytest.raises(ImageError, match="x: 1 NaN/Inf"):
            fn(x, y)
        with pytest.raises(ImageError, match="shape mismatch"):
            fn(y, y[:-1])
    with pytest.raises(ValueError, match="bins: expected an integer >= 2"):
        registration.mi(y, y, bins=data.draw(st.sampled_from([0, 1, 2.5, True])))


def flows(shape, max_abs: float = 4.0):
    dtype = st.sampled_from([np.float32, np.float64])
    return dtype.flatmap(lambda dt: hnp.arrays(
        dt, (2, *shape), elements=st.floats(-max_abs, max_abs, width=32 if dt == np.float32 else 64)))


@FAST
@given(data=st.data())
def test_endpoint_error_and_folding(data):
    shape = data.draw(shapes(1, 16), label="shape")
    flow = data.draw(flows(shape), label="flow")
    flow_true = data.draw(st.one_of(st.just(flow.copy()), flows(shape)), label="flow_true")
    mask = data.draw(st.one_of(st.none(), hnp.arrays(np.bool_, shape)), label="mask")
    if mask is not None and not mask.any():
        with pytest.raises(ImageError, match="mask: selects no pixels"):
            registration.endpoint_error(flow, flow_true, mask)
        return
    epe = registration.endpoint_error(flow, flow_true, mask)
    assert set(epe) == {"mean", "p95", "max"}
    for key in ("mean", "p95"):
        assert METRICS[f"registration.EPE_{key}"].function(flow, flow_true, mask) == epe[key]
    assert all(math.isfinite(v) and v >= 0 for v in epe.values())
    assert epe["mean"] <= epe["max"] * (1 + 1e-12) and epe["p95"] <= epe["max"] * (1 + 1e-12)
    assert registration.endpoint_error(flow_true, flow, mask) == epe
    assert registration.endpoint_error(flow, flow, mask) == {"mean": 0.0, "p95": 0.0, "max": 0.0}
    if min(shape) < 2:
        with pytest.raises(ValueError, match="too small for derivatives"):
            registration.folding_fraction(flow)
        return
    folding = METRICS["registration.Folding"].function(flow, mask)
    assert 0.0 <= folding <= 1.0
    assert registration.folding_fraction(np.zeros_like(flow), mask) == 0.0


@SOME
@given(data=st.data())
def test_flow_metrics_invalid_inputs_raise(data):
    shape = data.draw(shapes(2, 10))
    flow = data.draw(flows(shape))
    bad = flow.astype(np.float64)
    bad[data.draw(st.integers(0, 1)), 0, 0] = data.draw(st.sampled_from([np.nan, np.inf]))
    with pytest.raises(ValueError, match="NaN/Inf in displacement field"):
        registration.endpoint_error(bad, flow)
    with pytest.raises(ValueError, match="NaN/Inf in displacement field"):
        registration.folding_fraction(bad)
    with pytest.raises(ValueError, match=r"shape \(2, "):
        registration.endpoint_error(flow[:, :-1], flow)
    with pytest.raises(ValueError, match="expected a \\(2, H, W\\) displacement field"):
        registration.endpoint_error(flow[0], flow)


LABEL_DTYPES = ("uint8", "uint16", "int32", "int64", "bool")


@st.composite
def label_maps(draw, shape, max_label: int = 3):
    dtype = np.dtype(draw(st.sampled_from(LABEL_DTYPES)))
    top = 1 if dtype == np.bool_ else max_label
    kind = draw(st.sampled_from(["random", "zero", "single_pixel", "constant"]))
    if kind == "zero":
        return np.zeros(shape, dtype)
    if kind == "constant":
        return np.full(shape, draw(st.integers(0, top)), dtype)
    if kind == "single_pixel":
        arr = np.zeros(shape, dtype)
        arr[draw(st.integers(0, shape[0] - 1)), draw(st.integers(0, shape[1] - 1))] = draw(st.integers(1, top))
        return arr
    return draw(hnp.arrays(dtype, shape, elements=st.integers(0, top)))


@FAST
@given(data=st.data())
def test_warped_label_dice(data):
    shape = data.draw(shapes(1, 16), label="shape")
    moving = data.draw(label_maps(shape), label="labels_moving")
    fixed = data.draw(st.one_of(st.just(moving.copy()), label_maps(shape)), label="labels_fixed")
    flow = data.draw(st.one_of(st.just(np.zeros((2, *shape))), flows(shape, 3.0)), label="flow")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = registration.warped_label_dice(moving, fixed, flow)
    present = set(np.unique(fixed).tolist()) - {0}
    if present:
        assert METRICS["registration.Dice"].function(moving, fixed, flow) == scores["mean"]
        assert 0.0 <= scores["mean"] <= 100.0
        assert all(0.0 <= scores[k] <= 100.0 for k in present)
        assert not caught
        if np.array_equal(moving, fixed) and not np.any(flow):
            assert all(scores[k] == 100.0 for k in present)
    else:
        # documented: no scored label in labels_fixed -> mean NaN with a RuntimeWarning
        assert math.isnan(scores["mean"])
        assert [str(w.message) for w in caught] == [
            "warped_label_dice: no scored label is present in labels_fixed; mean is NaN"]


# --------------------------------------------------------------------------------------------
# Segmentation metrics
# --------------------------------------------------------------------------------------------

MASK_DTYPES = ("bool", "uint8", "uint16", "int64", "float32", "float64")


@st.composite
def masks(draw, shape):
    dtype = np.dtype(draw(st.sampled_from(MASK_DTYPES)))
    kind = draw(st.sampled_from(["random", "empty", "full", "single_pixel", "box"]))
    m = np.zeros(shape, bool)
    if kind == "random":
        m = draw(hnp.arrays(np.bool_, shape))
    elif kind == "full":
        m[:] = True
    elif kind == "single_pixel":
        m[draw(st.integers(0, shape[0] - 1)), draw(st.integers(0, shape[1] - 1))] = True
    elif kind == "box":
        r0, c0 = draw(st.integers(0, shape[0] - 1)), draw(st.integers(0, shape[1] - 1))
        m[r0:draw(st.integers(r0 + 1, shape[0])), c0:draw(st.integers(c0 + 1, shape[1]))] = True
    if dtype == np.bool_:
        return m
    # any nonzero value is foreground
    on = 1 if np.issubdtype(dtype, np.floating) and draw(st.booleans()) else (
        draw(st.floats(1e-3, 1.0)) if np.issubdtype(dtype, np.floating) else draw(st.integers(1, 200)))
    return np.where(m, on, 0).astype(dtype)


spacings = st.one_of(st.just((1.0, 1.0)), st.floats(0.1, 4.0),
                     st.tuples(st.floats(0.1, 4.0), st.floats(0.1, 4.0)))


@FAST
@given(data=st.data())
def test_segmentation_metrics(data):
    shape = data.draw(shapes(1, 20), label="shape")
    pred = data.draw(masks(shape), label="pred")
    ref = data.draw(st.one_of(st.just(pred.copy()), masks(shape)), label="ref")
    spacing = data.draw(spacings, label="spacing")
    p, r = pred != 0, ref != 0
    values = {}
    for name in ("DSC", "IoU", "Hausdorff", "HD95", "MSD"):
        fn = METRICS[f"segmentation.{name}"].function
        kw = {} if name in ("DSC", "IoU") else {"spacing": spacing}
        values[name], messages = call(fn, pred, ref, prefix=f"{fn.__name__}: ", **kw)
        swapped, _ = call(fn, ref, pred, prefix=f"{fn.__name__}: ", **kw)
        assert not math.isnan(values[name])
        assert swapped == pytest.approx(values[name], rel=1e-12, abs=1e-12)
        if not p.any() and not r.any():
            assert messages and "both masks are empty" in messages[0]
        elif not p.any() or not r.any():
            assert name in ("DSC", "IoU") or messages and "mask is empty" in messages[0]
        else:
            assert not messages
    assert 0.0 <= values["IoU"] <= values["DSC"] <= 100.0
    d = values["DSC"]
    assert values["IoU"] == pytest.approx(100.0 * d / (200.0 - d), abs=1e-9)
    if p.any() and r.any():
        sr, sc = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (2,))
        diagonal = math.hypot((shape[0] - 1) * sr, (shape[1] - 1) * sc)
        for name in ("Hausdorff", "HD95", "MSD"):
            assert 0.0 <= values[name] <= diagonal * (1 + 1e-12)
        assert values["HD95"] <= values["Hausdorff"] + 1e-12
        assert values["MSD"] <= values["Hausdorff"] + 1e-12
    elif p.any() or r.any():  # documented: inf with one empty mask
        assert values["DSC"] == values["IoU"] == 0.0
        assert values["Hausdorff"] == values["HD95"] == values["MSD"] == INF
    else:  # documented: two empty masks agree perfectly
        assert values["DSC"] == values["IoU"] == 100.0
        assert values["Hausdorff"] == values["HD95"] == values["MSD"] == 0.0
    if np.array_equal(p, r) and p.any():
        assert values["DSC"] == values["IoU"] == 100.0
        assert values["Hausdorff"] == values["HD95"] == values["MSD"] == 0.0


@SOME
@given(data=st.data())
def test_segmentation_invalid_inputs_raise(data):
    shape = data.draw(shapes(2, 12))
    pred = data.draw(masks(shape))
    for name in ("DSC", "IoU", "Hausdorff", "HD95", "MSD"):
        fn = METRICS[f"segmentation.{name}"].function
        with pytest.raises(ImageError, match="shape mismatch"):
            fn(pred, pred[:-1])
        bad = pred.astype(np.float64)
        bad[0, 0] = np.nan
        with pytest.raises(ImageError, match="ref: 1 NaN/Inf"):
            fn(pred, bad)
    with pytest.raises(ValueError, match="spacing: must be positive and finite"):
        segmentation.hausdorff(pred, pred, spacing=(1.0, data.draw(st.sampled_from([0.0, -1.0, np.nan]))))


# --------------------------------------------------------------------------------------------
# The image reader
# --------------------------------------------------------------------------------------------

@FAST
@given(data=st.data())
def test_as_image_converts_every_accepted_dtype(data):
    shape = data.draw(shapes(1, 24))
    x = data.draw(gray_images(shape), label="x")
    out = as_image(x, name="x")
    assert out.dtype == np.float32 and out.shape == x.shape
    assert np.all(np.isfinite(out)) and out.min() >= 0.0 and out.max() <= 1.0
    if x.dtype == np.bool_:
        expected = x.astype(np.float32)
    elif np.issubdtype(x.dtype, np.integer):
        expected = (x / float(np.iinfo(x.dtype).max)).astype(np.float32)
    else:
        expected = x.astype(np.float32)
    np.testing.assert_array_equal(out, expected)


@FAST
@given(data=st.data())
def test_as_image_rejects_invalid_input_with_named_message(data):
    shape = data.draw(shapes(1, 12))
    x = data.draw(gray_images(shape, dtypes=("float32", "float64")), label="x")
    i, j = data.draw(st.integers(0, shape[0] - 1)), data.draw(st.integers(0, shape[1] - 1))
    problem = data.draw(st.sampled_from(["nan", "high", "low", "negative_int", "colour", "ndim", "empty"]))
    if problem == "nan":
        x[i, j] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        error, match = ImageError, r"pat: 1 NaN/Inf value\(s\) in image"
    elif problem == "high":
        x[i, j] = data.draw(st.floats(1.0 + 1e-5, 1e6))
        error, match = ImageError, r"pat: float image values must lie in \[0, 1\]"
    elif problem == "low":
        x[i, j] = -data.draw(st.floats(1e-5, 1e6))
        error, match = ImageError, r"pat: float image values must lie in \[0, 1\]"
    elif problem == "negative_int":
        x = np.zeros(shape, np.int16)
        x[i, j] = -data.draw(st.integers(1, 32768))
        error, match = ImageError, "pat: negative values in integer image"
    elif problem == "colour":
        x = np.stack([x] * data.draw(st.sampled_from([3, 4])), axis=-1)
        error, match = ColourImageError, "pat: colour image of shape"
    elif problem == "ndim":
        x = x.reshape(-1) if data.draw(st.booleans()) else x[None, None]
        error, match = ImageError, "pat: expected a 2-D"
    else:
        x = np.zeros((0, shape[1]))
        error, match = ImageError, "pat: empty image"
    with pytest.raises(error, match=match):
        as_image(x, name="pat")


def _write_png_like(path, arr):
    import imageio.v3 as iio
    iio.imwrite(path, arr)


IMAGE_FORMATS = ("png8", "png16", "bmp", "tiff8", "tiff16", "tiff_float", "npy")


@st.composite
def stored_images(draw, max_side: int = 24):
    """(format, stored array): what a file of that format holds for a gray image."""
    fmt = draw(st.sampled_from(IMAGE_FORMATS))
    shape = draw(shapes(1, max_side))
    if fmt in ("png8", "bmp", "tiff8"):
        dtypes = ("uint8",)
    elif fmt in ("png16", "tiff16"):
        dtypes = ("uint16",)
    elif fmt == "tiff_float":
        dtypes = ("float32",)
    else:
        dtypes = IMAGE_DTYPES
    return fmt, draw(gray_images(shape, dtypes=dtypes))


def _save(tmp_path, fmt, arr, n):
    if fmt == "npy":
        path = tmp_path / f"img{n}.npy"
        np.save(path, arr)
    elif fmt.startswith("tiff"):
        import tifffile
        path = tmp_path / f"img{n}.tif"
        tifffile.imwrite(path, arr)
    else:
        path = tmp_path / f"img{n}.{'bmp' if fmt == 'bmp' else 'png'}"
        _write_png_like(path, arr)
    return path


@FAST
@given(item=stored_images(), colour=st.sampled_from([None, 3, 4]))
def test_read_image_round_trips_every_format(tmp_path_factory, item, colour):
    fmt, arr = item
    tmp_path = tmp_path_factory.mktemp("img")
    stored = arr
    if colour is not None and fmt in ("png8", "npy", "tiff8") and arr.dtype != np.bool_:
        # an RGB(A) file with three equal channels is a gray image (alpha is ignored)
        channels = [arr] * 3 + ([np.full_like(arr, np.iinfo(arr.dtype).max if arr.dtype.kind == "u"
                                              else 1)] if colour == 4 else [])
        stored = np.stack(channels, axis=-1)
    path = _save(tmp_path, fmt, stored, 0)
    out = read_image(path)
    assert out.dtype == np.float32 and out.shape == arr.shape
    np.testing.assert_array_equal(out, as_image(arr))
    assert read_array(path).array.shape == arr.shape
    np.testing.assert_array_equal(read_image(path, raw=True), arr)
    # to_gray of a gray (or equal-channel) file is the gray image itself
    np.testing.assert_array_equal(read_image(path, to_gray=True), as_image(arr))


@SOME
@given(shape=shapes(1, 16), seed=st.integers(0, 2**32 - 1), fmt=st.sampled_from(["png8", "npy", "tiff8"]))
def test_read_image_rejects_colour_unless_to_gray(tmp_path_factory, shape, seed, fmt):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    rgb[0, 0] = (0, 128, 255)  # at least one pixel with unequal channels
    path = _save(tmp_path_factory.mktemp("rgb"), fmt, rgb, 0)
    with pytest.raises(ColourImageError, match="colour image"):
        read_image(path)
    gray = read_image(path, to_gray=True)
    assert gray.dtype == np.float32 and gray.shape == shape
    luma = np.round(rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    np.testing.assert_array_equal(gray, as_image(luma))


@SOME
@given(shape=shapes(1, 24), data=st.data(), rgb=st.booleans())
def test_read_image_jpeg_is_a_valid_image(tmp_path_factory, shape, data, rgb):
    arr = data.draw(gray_images(shape, dtypes=("uint8",)), label="x")
    path = tmp_path_factory.mktemp("jpg") / "img.jpg"
    # an RGB JPEG of a gray image decodes with three equal channels (Cb = Cr = 128): gray
    _write_png_like(path, np.stack([arr] * 3, axis=-1) if rgb else arr)
    out = read_image(path)
    assert out.dtype == np.float32 and out.shape == shape
    assert 0.0 <= out.min() and out.max() <= 1.0
    if arr.min() == arr.max():  # a flat image survives JPEG to within a grey level or two
        assert np.max(np.abs(out * 255.0 - float(arr[0, 0]))) <= 2.0 + 1e-3


@FAST
@given(data=st.data(), intensity=st.sampled_from(["auto", "minmax"]))
def test_read_image_rescales_measurement_values(tmp_path_factory, data, intensity):
    shape = data.draw(shapes(1, 16))
    dtype = data.draw(st.sampled_from([np.float32, np.float64, np.int16, np.int32]))
    if np.issubdtype(dtype, np.floating):
        values = st.floats(-1e4, 1e4, width=32 if dtype == np.float32 else 64)
    else:
        values = st.integers(-1000, 1000)
    arr = data.draw(st.one_of(hnp.arrays(dtype, shape, elements=values),
                              values.map(lambda v: np.full(shape, v, dtype))), label="stored")
    path = _save(tmp_path_factory.mktemp("npy"), "npy", arr, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = read_image(path, intensity=intensity)
    assert out.dtype == np.float32 and out.shape == shape
    assert np.all(np.isfinite(out)) and out.min() >= 0.0 and out.max() <= 1.0
    if arr.min() == arr.max():
        assert not np.any(out)
        assert len(caught) == 1 and "constant data" in str(caught[0].message)
    else:
        assert not caught
        assert out.min() == 0.0 and out.max() == 1.0


@FAST
@given(data=st.data(), fmt=st.sampled_from([".png", ".tif", ".npy"]), bits=st.sampled_from([8, 16]))
def test_write_image_then_read_image(tmp_path_factory, data, fmt, bits):
    shape = data.draw(shapes(1, 24))
    x = as_image(data.draw(gray_images(shape), label="x"))
    path = tmp_path_factory.mktemp("w") / f"img{fmt}"
    write_image(path, x, bits=bits)
    back = read_image(path)
    assert back.dtype == np.float32 and back.shape == shape
    if fmt == ".npy":
        np.testing.assert_array_equal(back, x)
    else:
        scale = 255.0 if bits == 8 else 65535.0
        np.testing.assert_allclose(back, x, rtol=0, atol=0.5 / scale + 1e-7)


@SOME
@given(data=st.data())
def test_read_image_bad_files_raise_image_error(tmp_path_factory, data):
    tmp_path = tmp_path_factory.mktemp("bad")
    case = data.draw(st.sampled_from(["missing", "suffix", "garbage_png", "garbage_npy", "nan_npy", "range_tif",
                                      "volume_npy", "empty_npy"]))
    if case == "missing":
        path, match = tmp_path / "nothing.png", "file not found"
    elif case == "suffix":
        path, match = tmp_path / "img.gif", "unsupported image suffix '.gif'"
        path.write_bytes(b"GIF89a")
    elif case in ("garbage_png", "garbage_npy"):
        path = tmp_path / ("img.png" if case == "garbage_png" else "img.npy")
        path.write_bytes(data.draw(st.binary(max_size=64)))
        match = "unreadable file"
    elif case == "nan_npy":
        x = np.full(data.draw(shapes(1, 8)), 0.5)
        x[0, 0] = np.nan
        path, match = tmp_path / "img.npy", "NaN/Inf"
        np.save(path, x)
    elif case == "range_tif":
        import tifffile
        path, match = tmp_path / "img.tif", r"must lie in \[0, 1\]"
        tifffile.imwrite(path, np.full(data.draw(shapes(1, 8)), 2.0, np.float32))
    elif case == "volume_npy":
        path, match = tmp_path / "img.npy", "expected a 2-D image"
        np.save(path, np.zeros((2, 5, 6), np.uint8))
    else:
        path, match = tmp_path / "img.npy", "empty"
        np.save(path, np.zeros((0, 4), np.uint8))
    with pytest.raises(ImageError, match=match) as info:
        read_image(path)
    assert str(path) in str(info.value)
