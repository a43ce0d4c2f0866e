"""`imp eval`'s tables: one row per method (a checkpoint, the warp baseline), like the paper's
table 1 for self-reenactment, and one for cross-identity."""
from __future__ import annotations


def _f(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.0f} %"


def format_table(rows: dict[str, dict]) -> str:
    """Self-reenactment: name -> `reenactment.evaluate` result."""
    w = max([28] + [len(name) for name in rows])
    head = (f"{'method':<{w}} | {'L1':>6} {'PSNR':>6} {'SSIM':>6} | {'side L1':>7} {'side PSNR':>9} {'face PSNR':>9} | "
            f"{'SGBM err px':>11} {'vs mesh':>7} | {'LMD px':>6} | {'ID dist':>7} {'same':>5}")
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        ident = r.get("identity") or {}
        lines.append(f"{name:<{w}} | {_f(r['frontal']['l1']):>6} {_f(r['frontal']['psnr'], 2):>6} {_f(r['frontal']['ssim']):>6} | "
                     f"{_f(r['side']['l1']):>7} {_f(r['side']['psnr'], 2):>9} {_f(r['side'].get('face_psnr'), 2):>9} | "
                     f"{_f(r['stereo']['disparity_error_px'], 2):>11} {_f(r['stereo'].get('mesh_error_px'), 2):>7} | "
                     f"{_f(r.get('landmarks', {}).get('distance_px'), 2):>6} | "
                     f"{_f(ident.get('distance')):>7} {_pct(ident.get('same_person_rate')):>5}")
    return "\n".join(lines)


def format_region_table(rows: dict[str, dict]) -> str:
    """Self-reenactment's frontal error by region (reenactment.region_errors): name -> result."""
    from model.evaluation.reenactment import REGIONS

    w = max([28] + [len(name) for name in rows])
    head = f"{'method':<{w}} | " + " ".join(f"{r + ' PSNR':>15}" for r in REGIONS) + " | " + \
        " ".join(f"{r + ' share':>16}" for r in REGIONS)
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        f = r["frontal"]
        lines.append(f"{name:<{w}} | " + " ".join(f"{_f(f.get(k + '_psnr'), 2):>15}" for k in REGIONS) + " | "
                     + " ".join(f"{_pct(f.get(k + '_share')):>16}" for k in REGIONS))
    return "\n".join(lines)


def format_cross_table(rows: dict[str, dict]) -> str:
    """Cross-identity: name -> `cross_identity.evaluate_cross` result."""
    w = max([28] + [len(name) for name in rows])
    head = f"{'method':<{w}} | {'ID dist':>7} {'same person':>11} {'face found':>10} | {'LMD to driver px':>16}"
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        ident, lm = r["identity"], r.get("landmarks") or {}
        lines.append(f"{name:<{w}} | {_f(ident.get('distance')):>7} {_pct(ident.get('same_person_rate')):>11} "
                     f"{_pct(ident.get('detected_fraction')):>10} | {_f(lm.get('distance_px'), 2):>16}")
    return "\n".join(lines)


DIFFERENCES = (  # (label, path into a result, digits): the figures a student is held to against its teacher
    ("frontal PSNR", ("frontal", "psnr"), 2), ("SSIM", ("frontal", "ssim"), 3), ("side face PSNR", ("side", "face_psnr"), 2),
    ("ID dist", ("identity", "distance"), 3), ("cross ID dist", ("cross_identity", "identity", "distance"), 3),
)


def _get(result: dict, path: tuple[str, ...]) -> float | None:
    for key in path:
        result = (result or {}).get(key)
    return result


def format_differences(results: dict[str, dict], reference: str) -> str:
    """One line per result other than `reference`: its figures minus the reference's (e.g. a
    distilled student against its teacher); results: name -> `imp eval` result of a checkpoint."""
    base = results[reference]
    lines = []
    for name, r in results.items():
        if name == reference:
            continue
        parts = []
        for label, path, digits in DIFFERENCES:
            a, b = _get(r, path), _get(base, path)
            if a is not None and b is not None:
                parts.append(f"{label} {a - b:+.{digits}f}")
        lines.append(f"{name} - {reference}: {', '.join(parts) or 'no common figures'}")
    return "\n".join(lines)
