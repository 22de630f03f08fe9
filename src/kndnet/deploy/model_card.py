"""Model cards (Mitchell et al., FAT* 2019): what the model is, costs, how it scored, what it is not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kndnet.classes import CLASSES
from kndnet.cpu import INT8_ARITHMETIC
from kndnet.io import atomic_write_json, atomic_write_text

HAM10000_ATTRIBUTION = (
    "Trained on HAM10000: Tschandl P., Rosendahl C., Kittler H., \"The HAM10000 dataset, a large collection "
    "of multi-source dermatoscopic images of common pigmented skin lesions\", Sci. Data 5, 180161 (2018), "
    "doi:10.1038/sdata.2018.161; data record doi:10.7910/DVN/DBW86T, CC BY-NC. Research use only.")
INTENDED_USE = ("Research and education on efficient skin-lesion classification of dermoscopic images; "
                "benchmarking on-device inference. Not for diagnosis.")
LIMITATIONS = [
    "Not a medical device: it has not been clinically validated and must not guide diagnosis or treatment.",
    "Trained on dermoscopic images from two sites in Austria and Australia (HAM10000); expect lower accuracy on "
    "other devices, clinical (non-dermoscopic) photos, darker skin types and lesion types outside the 7 classes.",
    "Class imbalance: minority classes (df, vasc, akiec) have few training examples and wide confidence intervals.",
]

MEASURED_PREFIXES = ("fp32_", "int8_", "onnx_", "torch_", "tflite_", "tflm_")


def write_model_card(out_dir: Path, card: dict[str, Any]) -> None:
    """Write model_card.json (for programs) and MODEL_CARD.md (for people)."""
    card = {**card, "intended_use": INTENDED_USE, "limitations": [*LIMITATIONS, *_melanoma_limitation(card)],
            "data_attribution": HAM10000_ATTRIBUTION, "classes": [c.code for c in CLASSES]}
    atomic_write_json(out_dir / "model_card.json", card)
    atomic_write_text(out_dir / "MODEL_CARD.md", _markdown(card))


def kilobytes(n: int | None) -> str:
    """A file or memory size as the cards and the export print it."""
    return f"{n / 1024:.1f} KB" if n else "-"


def _markdown(card: dict[str, Any]) -> str:
    lines = [f"# Model card: {card['arch']} ({card['image_size']} px)", "",
             "**Not a medical device.** " + INTENDED_USE, "", "## Costs", "",
             f"- parameters: {card['parameters']:,}",
             f"- multiply-accumulates per image: {card['macs'] / 1e6:.1f} M",
             f"- files: fp32 ONNX {kilobytes(card.get('fp32_bytes'))}, int8 ONNX "
             f"{kilobytes(card.get('int8_bytes'))}",
             "- peak activation memory at int8 (graph liveness, batch 1): "
             f"{kilobytes(card['peak_activation_bytes_int8'])}",
             *_litert_lines(card), *_colour_lines(card), *_decision_rule_lines(card), *_probability_lines(card),
             "", "## Classes", "", ", ".join(f"{c.index} {c.code} ({c.name})" for c in CLASSES), ""]
    metrics = {k: v for k, v in card.items() if k.startswith(MEASURED_PREFIXES) and k.endswith(
        ("accuracy", "macro_f1", "agreement", "diff", "images", "steps"))}
    if metrics:
        lines += ["## Measured", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in metrics.items()] + [""]
    if card.get("int8_arithmetic"):  # VNNI CPUs and others can call an image differently (kndnet.cpu)
        arithmetic = INT8_ARITHMETIC.get(card["int8_arithmetic"], card["int8_arithmetic"])
        lines += [f"int8 figures computed with ONNX Runtime's {arithmetic}.", ""]
    lines += _sensitivity_lines(card)
    if card.get("training"):
        lines += ["## Training", "", "```", str(card["training"]), "```", ""]
    if card.get("export_command"):
        lines += ["## Provenance", "", "```", f"$ {card['export_command']}", *export_summary(card), "```", ""]
    lines += ["## Limitations", ""] + [f"- {x}" for x in card["limitations"]]
    lines += ["", "## Data", "", HAM10000_ATTRIBUTION, ""]
    return "\n".join(lines)


def _sensitivity_lines(card: dict[str, Any]) -> list[str]:
    """Per-class sensitivity (recall) on the held-out split, fp32 and int8, with each class's image count."""
    if "fp32_sensitivity" not in card:
        return []
    cell = lambda value: "-" if value is None else f"{value:.3f}"  # noqa: E731
    lines = [f"## Sensitivity by class ({card.get('int8_eval_split', 'held-out')} split)", "",
             "| class | images | fp32 | int8 ONNX |", "| --- | --- | --- | --- |"]
    lines += [f"| {code} | {count} | {cell(card['fp32_sensitivity'][code])} | {cell(card['int8_sensitivity'][code])} |"
              for code, count in card["eval_images_per_class"].items()]
    return lines + [""]


def _melanoma_limitation(card: dict[str, Any]) -> list[str]:
    """The miss rate that matters most, in words, when the card measured it."""
    sensitivity = card.get("int8_sensitivity", {}).get("mel")
    if sensitivity is None:
        return []
    return [f"Melanoma sensitivity of the int8 ONNX model on the {card.get('int8_eval_split', 'held-out')} split is "
            f"{sensitivity:.2f}: it missed {1 - sensitivity:.0%} of the melanomas there. Never use it to rule "
            "melanoma out."]


def _decision_rule_lines(card: dict[str, Any]) -> list[str]:
    """A logit adjustment changes what the model calls; the card must say so (evaluation/logit_adjustment.py)."""
    if not card.get("prior_tau"):
        return []
    return ["", "## Decision rule", "",
            f"- logit adjustment: {card['prior_tau']:g} * log(training class prior) is folded into the classifier "
            "bias (`kndnet calibrate --logit-adjust`): the model calls common classes more often than the "
            "balanced-trained network, with lower rare-class recall, melanoma sensitivity included"]


def _probability_lines(card: dict[str, Any]) -> list[str]:
    """A calibration temperature changes every probability the model reports (not its calls), and the exported
    graphs output raw logits, so the card says who divides by it (evaluation/calibration.py)."""
    temperature = card.get("calibration_temperature", 1.0)
    if temperature == 1.0:
        return []
    return ["", "## Probabilities", "",
            f"- temperature scaling (Guo et al. 2017): the logits are divided by T = {temperature:.4g}, fitted on the "
            "validation split (`kndnet calibrate`); every kndnet runtime, the web app and main.cc "
            "(kKndnetTemperature) do it, but the ONNX and LiteRT graphs output raw logits: divide them by T before "
            "the softmax (the class called is the same either way)"]


def _colour_lines(card: dict[str, Any]) -> list[str]:
    """Where the white balance happens: a runtime feeding the LiteRT file must do it (deploy/tflite_export.py)."""
    if card.get("color_constancy", "none") == "none":
        return []
    return ["", "## Preprocessing", "",
            "- colour constancy: Shades-of-Gray white balance (p = 6), a layer of the checkpoint and of both ONNX "
            "graphs; the LiteRT graph leaves it out (its powers would stay float), so white-balance the RGB pixels "
            "before feeding it, as main.cc's white_balance() does (`kndnet export --c-array`)"]


def _litert_lines(card: dict[str, Any]) -> list[str]:
    """The LiteRT file and the TFLite Micro arena it was measured to need, when exported with --tflite."""
    if "tflite_int8_bytes" not in card:
        return []
    lines = [f"- full-integer LiteRT model (flash): {kilobytes(card['tflite_int8_bytes'])}; input "
             f"{card['tflite_input']}, int8 = pixel / {card['input_scale']:.4g} + ({card['input_zero_point']})",
             f"- TensorFlow Lite Micro arena (RAM), measured: {kilobytes(card['tflm_arena_bytes'])} (of which tensors "
             f"{kilobytes(card['tflm_arena_head_bytes'])}), next to the graph-liveness estimate "
             f"{kilobytes(card['peak_activation_bytes_int8'])}"]
    if card.get("trained_image_size") != card["image_size"]:
        lines.append(f"- exported at {card['image_size']} px from weights trained at {card['trained_image_size']} px")
    return lines


def export_summary(card: dict[str, Any]) -> list[str]:
    """What `kndnet export` prints about the files it wrote, from their card alone: the README quotes the shipped
    student's lines from its card (scripts/readme_shipped.py), so they are the command's own words."""
    split = card.get("int8_eval_split", "test")
    lines = [f"fp32 ONNX: {kilobytes(card['fp32_bytes'])}, parity vs PyTorch max |diff| "
             f"{card['onnx_fp32_vs_torch_max_abs_logit_diff']:.1e}; {card['macs'] / 1e6:.1f} M MACs; "
             f"int8 peak activations {card['peak_activation_bytes_int8'] / 1024:.0f} KB"]
    if "int8_bytes" in card:
        lines.append(f"int8 ONNX: {kilobytes(card['int8_bytes'])}; on {split}: accuracy fp32 "
                     f"{card['fp32_accuracy']:.3f} vs int8 {card['int8_accuracy']:.3f}, macro-F1 "
                     f"{card['fp32_macro_f1']:.3f} vs {card['int8_macro_f1']:.3f}, top-1 agreement "
                     f"{card['int8_vs_fp32_top1_agreement']:.3f}")
    if "tflite_int8_bytes" in card:
        lines += [f"int8 LiteRT: {kilobytes(card['tflite_int8_bytes'])}, {card['tflite_int8_float_ops']} float ops; on "
                  f"{split}: accuracy fp32 PyTorch {card['torch_fp32_accuracy']:.3f} vs LiteRT "
                  f"{card['tflite_int8_accuracy']:.3f}, macro-F1 {card['torch_fp32_macro_f1']:.3f} vs "
                  f"{card['tflite_int8_macro_f1']:.3f}, top-1 agreement "
                  f"{card['tflite_int8_vs_torch_fp32_top1_agreement']:.3f}",
                  f"TFLite Micro: arena {kilobytes(card['tflm_arena_bytes'])} (graph-liveness estimate "
                  f"{kilobytes(card['peak_activation_bytes_int8'])}), flash {kilobytes(card['tflite_int8_bytes'])}; "
                  f"top-1 agreement with LiteRT {card['tflm_vs_litert_ref_top1_agreement']:.3f} on "
                  f"{card['tflm_images']} images"]
    return lines
