"""Each trial's architecture as a Markdown note on its optuna-dashboard page.

The objective writes :func:`spec_markdown` as soon as the spec is sampled and again once
params, FLOPs and latency are measured, so ``python -m nas.dashboard`` opened during a
search shows the structure as a table. Stored values reach it through :mod:`nas.stored`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from nas.model import ArchSpec, AttentionSpec, StemSpec
from nas.search._results import BASELINE_ATTR
from nas.stored import markdown_text


def spec_markdown(spec: ArchSpec, attrs: Mapping[str, Any]) -> str:
    """The spec as Markdown: the one-line summary, a table of stages, the rest as a list.

    ``attrs`` are the trial's user attrs; params, FLOPs and latency appear once measured.
    """
    # Plain text (escaped), not code: a long summary must wrap on the trial's page.
    lines = ["#### " + markdown_text(attrs.get("summary") or spec.summary()), ""]
    if attrs.get(BASELINE_ATTR):
        name = markdown_text(attrs[BASELINE_ATTR])
        lines += [f"Hand design **{name}** (an enqueued baseline).", ""]
    # Spaces sample one activation and norm for the whole network: a column only if not.
    act_norm = sorted({_act_norm(s.activation, s.norm) for s in spec.stages})
    columns = ["stage", "block", "width", "depth", "kernel", "attention", "downsample", "map"]
    columns += ["act · norm"] if len(act_norm) > 1 else []
    # The dashboard pads cells little: centring short cells keeps neighbours apart.
    align = {"block": ":--", "attention": ":--"}
    if spec.stages:
        lines += [
            "| " + " | ".join(columns) + " |",
            "|" + "|".join(align.get(c, ":-:") for c in columns) + "|",
        ]
    for i, (stage, (h, w)) in enumerate(zip(spec.stages, spec.resolutions(), strict=True)):
        cells = [
            str(i),
            stage.block,
            str(stage.width),
            str(stage.depth),
            f"{stage.kernel}×{stage.kernel}",
            _attention_cell(stage.attention, stage.width),
            "–" if stage.downsample == "none" else stage.downsample,
            f"{h}×{w}",
        ]
        cells += [_act_norm(stage.activation, stage.norm)] if len(act_norm) > 1 else []
        lines.append("| " + " | ".join(cells) + " |")
    stem, head = spec.stem, spec.head
    hidden = "".join(f"{n} → " for n in head.hidden)
    extras = f", {head.activation}" if head.hidden else ""
    extras += f", dropout {head.dropout:g}" if head.hidden and head.dropout else ""
    lines += [
        "",
        f"- **input** {spec.input.channels}×{spec.input.height}×{spec.input.width}, "
        f"{spec.classes} classes",
        _stem_line(stem),
        *([f"- **stages** {act_norm[0]} throughout"] if len(act_norm) == 1 else []),
        *([] if spec.stages else ["- **stages** none"]),
        f"- **global pool** {spec.global_pool} → {spec.pooled_features()} features",
        f"- **head** {spec.pooled_features()} → {hidden}{spec.classes}{extras}",
    ]
    measured = []
    if isinstance(attrs.get("params"), int):
        measured.append(f"**params** {attrs['params']:,}")
    if isinstance(attrs.get("flops"), int | float):
        measured.append(f"**FLOPs** {attrs['flops'] / 1e6:.1f} M")
    if isinstance(attrs.get("latency_ms"), int | float):
        text = f"**latency** {attrs['latency_ms']:.3f} ms"
        how = attrs.get("latency")
        how = how if isinstance(how, dict) else {}
        iqr = attrs.get("latency_iqr_ms")
        details = [f"IQR {iqr:.3f}"] if isinstance(iqr, int | float) else []
        details += [
            f"{k} {markdown_text(how[k])}" for k in ("batch", "device", "threads") if k in how
        ]
        measured.append(text + (f" ({', '.join(details)})" if details else ""))
    if measured:
        lines.append("- " + " · ".join(measured))
    return "\n".join(lines) + "\n"


def _stem_line(stem: StemSpec) -> str:
    if stem.kind == "none":
        return "- **stem** none: the pixels go on as they are"
    if stem.kind == "patch":
        shape = f"{stem.stride}×{stem.stride} patches → {stem.width} channels"
    else:
        shape = f"{stem.width} channels, {stem.kernel}×{stem.kernel} stride {stem.stride}"
    return f"- **stem** {shape}, " + _act_norm(stem.activation, stem.norm)


def _act_norm(activation: str, norm: str) -> str:
    return f"{activation} · " + ("no norm" if norm == "none" else f"{norm} norm")


def _attention_cell(a: AttentionSpec | None, width: int) -> str:
    if a is None:
        return "–"
    if a.op == "channel":
        return f"channel, reduction {a.reduction}"
    text = f"{a.op} {a.heads}×{a.head_dim or width // a.heads}"
    if a.op == "manet_conv":
        text += f", qkv {a.kernel}×{a.kernel}"
    if a.op == "manet_pool":
        text += f", kv pool {a.pool_stride}"
    return text + ("" if a.position == "none" else f", {a.position} pos")


def write_note(trial: optuna.Trial, spec: ArchSpec) -> None:
    """Save :func:`spec_markdown` as the trial's optuna-dashboard note.

    The dashboard keeps notes in the study's system attrs (per trial id, with a version),
    which every storage has, so this works from any worker on any storage.
    """
    # Imported here: optuna_dashboard pulls in scikit-learn (seconds), once per process.
    from optuna_dashboard import save_note

    save_note(trial, spec_markdown(spec, trial.user_attrs))
