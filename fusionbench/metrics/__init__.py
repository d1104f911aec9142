"""The metrics core: fusion (paper Table 2), registration (Table 1) and segmentation (Tables 3-4).

Pure numpy/scipy functions; see each module for the conventions. :data:`METRICS` describes every
reported column, keyed ``"group.NAME"`` (``"fusion.MI"``, ``"registration.MI"``, ...), because the
field uses the same names for different quantities in different tables.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import registration, segmentation
from .feature_mi import fmi
from .fusion import SUITE_COLUMNS, ag, en, fusion_suite, mi, psnr, qabf, sd, sf, ssim, suite_columns, vif


@dataclass(frozen=True)
class MetricInfo:
    """One reported metric: its function, table group, direction, range and reference."""

    name: str
    function: Callable  # fusion metrics all take (a, b, f, **kw), even those that only read f
    group: str  # "fusion" | "registration" | "segmentation"
    higher_is_better: bool
    range: str
    reference: str


def _fmi_column(feature: str) -> Callable:
    def column(a, b, f, **kw):
        return fmi(a, b, f, feature=feature, **kw)

    column.__name__ = f"fmi_{feature}"
    column.__doc__ = f"``fmi(a, b, f, feature={feature!r})``: see :func:`fusionbench.metrics.feature_mi.fmi`."
    return column


_HAGHIGHAT = "Haghighat, Aghagolzadeh, Seyedarabi, Computers & Electrical Eng. 37(5), 2011"
_rows = [
    ("MI", mi, "fusion", True, "[0, 16] bits (sum of two)", "Qu, Zhang, Yan, Electronics Letters 38(7), 2002"),
    ("VIF", vif, "fusion", True, ">= 0 (sum of two; 2 for f == a == b)", "Sheikh & Bovik, IEEE TIP 15(2), 2006"),
    ("Qabf", qabf, "fusion", True, "[0, 0.9754]", "Xydeas & Petrovic, Electronics Letters 36(4), 2000"),
    ("SF", lambda a, b, f, **kw: sf(f, **kw), "fusion", True, "[0, sqrt(2)] on [0, 1]", "Eskicioglu & Fisher, IEEE Trans. Commun. 43(12), 1995"),
    ("SSIM", ssim, "fusion", True, "[-2, 2] (sum of two)", "Wang et al., IEEE TIP 13(4), 2004"),
    ("FMI_pixel", _fmi_column("edge"), "fusion", True, "[0, 1]", _HAGHIGHAT + " (edge features, the toolbox default)"),
    ("FMI_dct", _fmi_column("dct"), "fusion", True, "[0, 1]", _HAGHIGHAT),
    ("FMI_w", _fmi_column("wavelet"), "fusion", True, "[0, 1]", _HAGHIGHAT),
    ("EN", lambda a, b, f, **kw: en(f, **kw), "fusion", True, "[0, 8] bits", "van Aardt, J. Appl. Remote Sens. 2(1), 2008"),
    ("SD", lambda a, b, f, **kw: sd(f, **kw), "fusion", True, "[0, 127.5] on 0-255", "Rao, Meas. Sci. Technol. 8(4), 1997"),
    ("AG", lambda a, b, f, **kw: ag(f, **kw), "fusion", True, ">= 0 on 0-255", "Cui et al., Optics Communications 341, 2015"),
    ("PSNR", psnr, "fusion", True, "[0, inf] dB", "Jagalingam & Hegde, Aquatic Procedia 4, 2015"),
    ("MI", registration.mi, "registration", True, ">= 0 nats", "Viola & Wells, IJCV 24(2), 1997"),
    ("NMI", registration.nmi, "registration", True, "[0, 1] (arithmetic)", "Strehl & Ghosh, JMLR 3, 2002"),
    ("NCC", registration.ncc, "registration", True, "[-1, 1]", "Pearson correlation"),
    ("EPE_mean", lambda flow, flow_true, mask=None: registration.endpoint_error(flow, flow_true, mask)["mean"],
     "registration", False, ">= 0 px", "Baker et al., IJCV 92(1), 2011"),
    ("EPE_p95", lambda flow, flow_true, mask=None: registration.endpoint_error(flow, flow_true, mask)["p95"],
     "registration", False, ">= 0 px", "Baker et al., IJCV 92(1), 2011"),
    ("Dice", lambda lm, lf, flow: registration.warped_label_dice(lm, lf, flow)["mean"],
     "registration", True, "[0, 100]", "warped-label Dice (Dice, Ecology 26(3), 1945)"),
    ("Folding", registration.folding_fraction, "registration", False, "[0, 1]",
     "share of pixels with det J <= 0"),
    ("DSC", segmentation.dsc, "segmentation", True, "[0, 100]", "Dice, Ecology 26(3), 1945 (medpy dc x 100)"),
    ("IoU", segmentation.iou, "segmentation", True, "[0, 100]", "Jaccard 1912 (medpy jc x 100)"),
    ("Hausdorff", segmentation.hausdorff, "segmentation", False, ">= 0 (spacing units)",
     "Huttenlocher et al., IEEE TPAMI 15(9), 1993 (medpy hd)"),
    ("HD95", segmentation.hd95, "segmentation", False, ">= 0 (spacing units)", "medpy hd95"),
    ("MSD", segmentation.msd, "segmentation", False, ">= 0 (spacing units)",
     "pooled symmetric mean surface distance (medpy 0.5 assd)"),
]

#: ``"group.NAME"`` -> :class:`MetricInfo` for every reported column.
METRICS: dict[str, MetricInfo] = {f"{g}.{n}": MetricInfo(n, fn, g, hib, rng, ref) for n, fn, g, hib, rng, ref in _rows}


def get_metric(name: str, group: str = "fusion") -> MetricInfo:
    """The :class:`MetricInfo` of ``name`` in ``group`` (raises ``KeyError`` listing the known ones)."""
    try:
        return METRICS[f"{group}.{name}"]
    except KeyError:
        known = ", ".join(k for k in METRICS if k.startswith(f"{group}."))
        raise KeyError(f"unknown {group} metric {name!r}; known: {known}") from None


__all__ = ["METRICS", "MetricInfo", "get_metric", "SUITE_COLUMNS", "fusion_suite", "suite_columns", "mi", "vif",
           "qabf", "sf", "ssim", "fmi", "en", "sd", "ag", "psnr", "registration", "segmentation"]
