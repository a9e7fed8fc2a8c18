"""``stepvit export`` and ``stepvit eval``: quantize a run; measure an export's integer model.

Only argparse and the standard library at the top (``model/commands.py`` re-exports these
commands); torch is imported inside each command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from stepvit.model.export.options import (
    add_budget_argument,
    add_progress_argument,
    input_folder,
    output_folder,
)

#: Test images (and their outputs at every budget) kept in ``golden_vectors.npz``.
GOLDEN_VECTOR_IMAGES = 32
#: Images per golden-model batch.
EVAL_BATCH = 500


def export_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``stepvit export``."""
    parser.add_argument("run", type=Path, help="run folder holding checkpoint.pt")
    parser.add_argument("--out", type=Path, default=None,
                        help="export directory (default: RUN/export)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="override the run's data.data_dir (CIFAR folders)")
    parser.add_argument("--images", type=int, default=None,
                        help="measure the accuracies on the first N test images (default: all)")
    parser.add_argument("--finetune-epochs", type=int, default=0,
                        help="quantization-aware fine-tuning epochs on the training split "
                             "before quantizing (default: 0, plain post-training "
                             "quantization, which keeps the float model's decisions best; "
                             "use 2-3 when the integer accuracy drops)")
    parser.add_argument("--finetune-lr", type=float, default=3e-4,
                        help="learning rate of the fine-tuning (default: 3e-4)")
    add_progress_argument(parser)


def eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``stepvit eval``."""
    parser.add_argument("export", type=Path, help="export directory")
    add_budget_argument(parser)
    parser.add_argument("--dataset", default=None,
                        help="data set (default: the one the export's accuracy names)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="folder holding the CIFAR folders (default: data)")
    parser.add_argument("--images", type=int, default=None,
                        help="evaluate the first N test images (default: all)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default: 1; 0: torch's default)")
    add_progress_argument(parser)


def _positive(value: int | None, option: str) -> int | None:
    from stepvit.model.export.errors import StepvitError

    if value is not None and value < 1:
        raise StepvitError(f"{option} must be >= 1, got {value}")
    return value


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads in torch (0: torch's default).

    The tensors here are small: on a shared machine more intra-op threads only contend.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)


def integer_outputs(golden: Any, images: Any, *, budget: int | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """Run the golden model over ``images`` in batches; return predictions and mean work."""
    import torch

    from stepvit.model.progress import progress_bar

    predicted, work_sums = [], {}
    starts = range(0, len(images), EVAL_BATCH)
    for start in progress_bar(starts, desc=f"golden (budget {budget})", enabled=progress,
                              leave=False):
        result = golden.run(images[start:start + EVAL_BATCH], budget=budget)
        predicted.append(result.predicted)
        for key, values in result.work.items():
            work_sums[key] = work_sums.get(key, 0) + int(values.sum())
        mask = result.mask
    return {
        "predicted": torch.cat(predicted),
        "mask": mask,
        "work": {key: total / len(images) for key, total in work_sums.items()},
    }


def float_predictions(model: Any, images: Any) -> Any:
    """Return the float model's predicted classes of ``images``."""
    import torch

    with torch.no_grad():
        return torch.cat([model(images[start:start + EVAL_BATCH]).argmax(dim=1)
                          for start in range(0, len(images), EVAL_BATCH)])


def write_golden_vectors_of(path: Path, golden: Any, images: Any, labels: Any) -> None:
    """Run the golden model at every budget on ``images`` and write ``golden_vectors.npz``."""
    import numpy as np

    from stepvit.model.export.vectors import (
        STEM_WORK_KEY,
        VECTOR_WORK_KEYS,
        write_golden_vectors,
    )

    budgets = list(range(1, golden.t_max + 1))
    results = [golden.run(images, budget=budget) for budget in budgets]
    outputs = {
        "logits": np.stack([r.logits.numpy() for r in results]),
        "predicted": np.stack([r.predicted.numpy() for r in results]),
        "spike_totals": np.stack([r.layer_spike_totals().numpy() for r in results]),
        **{key: np.stack([r.work[key].numpy() for r in results]) for key in
           (*VECTOR_WORK_KEYS, STEM_WORK_KEY) if key in results[0].work},
    }
    if golden.stem:
        outputs.update(stem_map_counts(golden, images, results[-1].mask))
    write_golden_vectors(path, images.numpy(), labels.numpy(), budgets, outputs)


def stem_map_counts(golden: Any, images: Any, mask: Any) -> dict[str, Any]:
    """Return the stem's map counts of the golden vectors (``STEM_MAP_KEYS``) at ``mask``."""
    import numpy as np

    from stepvit.model.export.stem import word_counts

    maps, _ = golden.stem_emitted(images, mask)
    shape = (len(images), len(golden.stem), golden.t_max)
    bits, empty = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    for (module, step), emitted in maps.items():
        bits[:, module, step], empty[:, module, step] = word_counts(emitted.sum(dim=1).numpy())
    return {"stem_map_bits": bits, "stem_map_empty": empty}


def export(args: argparse.Namespace) -> int:
    """Quantize a trained run, write its export directory, report float vs integer accuracy."""
    from stepvit.model.data import load_dataset
    from stepvit.model.export import load_export
    from stepvit.model.export.errors import StepvitError
    from stepvit.model.export.writer import write_export
    from stepvit.model.finetune import finetune
    from stepvit.model.golden import GoldenModel
    from stepvit.model.quantize import quantize
    from stepvit.model.train import load_run, reference_model

    count = _positive(args.images, "--images")
    if args.finetune_epochs < 0 or args.finetune_lr <= 0:
        raise StepvitError("--finetune-epochs must be >= 0 and --finetune-lr > 0")
    input_folder(args.run, "RUN")
    out_dir = output_folder(args.out or Path(args.run) / "export", "--out")
    model, config, class_names = load_run(args.run)
    set_threads(config["training"].get("threads", 1))
    dataset = config["data"]["dataset"]
    data_dir = args.data_dir or config["data"]["data_dir"]
    images, labels, _ = load_dataset(dataset, data_dir, "test")
    images, labels = images[:count], labels[:count]
    # the trained model is the reference, also when the export is fine-tuned: after
    # quantization-aware epochs that is its integer emulation, else the float network
    reference = reference_model(args.run, model)
    quantization_aware = reference is not model
    floating = float_predictions(reference, images)
    float_forward = float_predictions(model, images) if quantization_aware else floating
    if args.finetune_epochs:
        train_images, train_labels, _ = load_dataset(dataset, data_dir, "train")
        finetune(model, train_images, train_labels, epochs=args.finetune_epochs,
                 lr=args.finetune_lr, seed=config["training"]["seed"],
                 progress=not args.no_progress)
    network = quantize(model, class_names)
    write_export(out_dir, name=config["name"], **network.writer_arguments())
    golden = GoldenModel(load_export(out_dir))
    integer = integer_outputs(golden, images, progress=not args.no_progress)["predicted"]
    accuracy = {
        "dataset": dataset,
        "split": "test",
        "images": len(labels),
        "float": round(float((floating == labels).float().mean()), 6),
        "integer": round(float((integer == labels).float().mean()), 6),
    }
    write_export(out_dir, name=config["name"], **network.writer_arguments(), accuracy=accuracy)
    exported = load_export(out_dir)
    write_golden_vectors_of(out_dir / "golden_vectors.npz", GoldenModel(exported),
                         images[:GOLDEN_VECTOR_IMAGES], labels[:GOLDEN_VECTOR_IMAGES])
    print(json.dumps({
        "export": str(out_dir),
        "config_hash": exported.manifest["config_hash"],
        **{f"{key}_accuracy": accuracy[key] for key in ("float", "integer")},
        "class_agreement": round(float((floating == integer).float().mean()), 6),
        "reference": "integer emulation (quantization-aware run)" if quantization_aware
                     else "float model",
        **({"float_forward_accuracy": round(float((float_forward == labels).float().mean()), 6),
            "float_forward_agreement": round(float((float_forward == integer).float().mean()), 6)}
           if quantization_aware else {}),
        "images": accuracy["images"],
        "finetune_epochs": args.finetune_epochs,
        "bit_widths": exported.bit_widths,
    }))
    return 0


def eval(args: argparse.Namespace) -> int:
    """Print the integer golden accuracy and work of an export as JSON, per budget."""
    from stepvit.model.data import load_dataset
    from stepvit.model.export import load_export, parse_budgets
    from stepvit.model.export.energy import energy_estimate_uj
    from stepvit.model.export.errors import StepvitError
    from stepvit.model.golden import GoldenModel

    count = _positive(args.images, "--images")
    if args.threads < 0:
        raise StepvitError(f"--threads must be >= 0, got {args.threads}")
    exported = load_export(args.export)
    budgets = parse_budgets(args.budget, exported.t_max)
    set_threads(args.threads)
    dataset = args.dataset or exported.manifest["accuracy"]["dataset"]
    if dataset is None:
        raise StepvitError("the export names no data set (untrained): give --dataset")
    images, labels, _ = load_dataset(dataset, args.data_dir, "test")
    if list(images.shape[1:]) != list(exported.arch["image_shape"]):
        raise StepvitError(f"data set {dataset} has images {list(images.shape[1:])}, the export "
                           f"expects {exported.arch['image_shape']}")
    images, labels = images[:count], labels[:count]
    golden = GoldenModel(exported)
    rows = []
    for budget in budgets:
        outputs = integer_outputs(golden, images, budget=budget, progress=not args.no_progress)
        work = outputs["work"]
        rows.append({
            "budget": budget,
            "accuracy": round(float((outputs["predicted"] == labels).float().mean()), 6),
            "avg_timesteps": round(float(outputs["mask"].sum(axis=1).mean()), 4),
            "ac_ops": round(work["ac_ops"], 1),
            "embed_ac_ops": round(work["embed_ac_ops"], 1),
            "mac_ops": round(work["mac_ops"], 1),
            "dense_ac_ops": round(work["dense_ac_ops"], 1),
            "energy_uj": round(energy_estimate_uj(work["mac_ops"], work["ac_ops"]), 6),
        })
    print(json.dumps({"export": str(args.export), "dataset": dataset, "split": "test",
                      "images": len(labels), "results": rows}))
    return 0


def random_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``stepvit random-export``."""
    parser.add_argument("--config", type=Path, required=True,
                        help="training config whose model section gives the architecture")
    parser.add_argument("--out", type=Path, required=True, help="export directory to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--vectors", type=int, default=0, metavar="N",
                        help="also write golden_vectors.npz of N random images (uniform "
                             "pixels, label 0), so that `stepvit sim`/`run --emulate` can check "
                             "a design of the architecture against the golden model (default 0: "
                             "none)")


def random_export(args: argparse.Namespace) -> int:
    """Write an untrained export of a config's architecture (for sizing hardware).

    With ``--vectors N``, also its golden vectors on ``N`` random images.
    """
    from stepvit.model.config import load_config
    from stepvit.model.data import image_shape, num_classes
    from stepvit.model.export.errors import StepvitError
    from stepvit.model.random_export import make_random_export

    if args.vectors < 0:
        raise StepvitError(f"--vectors: a number of images, 0 or more, not {args.vectors}")
    config = load_config(args.config)
    output_folder(args.out, "--out")
    model, dataset = config["model"], config["data"]["dataset"]
    out = make_random_export(
        args.out,
        image_shape=image_shape(dataset),
        patch=model["patch"],
        dim=model["dim"],
        heads=model["heads"],
        depth=model["depth"],
        mlp_dim=model["mlp_dim"],
        num_classes=num_classes(dataset),
        t_max=model["t_max"],
        seed=args.seed,
        leak_shift=model["leak_shift"],
        reset=model["reset"],
        stem=model["stem"],
        name=f"{config['name']}-untrained",
    )
    print(f"untrained export of {args.config} written to {out} (random weights, no accuracy)")
    if args.vectors:
        import numpy as np
        import torch

        from stepvit.model.export import load_export
        from stepvit.model.export.vectors import VECTORS_FILE
        from stepvit.model.golden import GoldenModel

        export = load_export(out)
        rng = np.random.default_rng(args.seed)
        images = rng.integers(0, 256, (args.vectors, *export.arch["image_shape"]),
                              dtype=np.uint8)
        write_golden_vectors_of(Path(out) / VECTORS_FILE, GoldenModel(export),
                                torch.from_numpy(images),
                                torch.zeros(args.vectors, dtype=torch.int64))
        print(f"golden vectors of {args.vectors} random images written to "
              f"{Path(out) / VECTORS_FILE}")
    return 0
