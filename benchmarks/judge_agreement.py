"""Measure the offline judges' agreement with people on the public labelled sets; write the shipped file.

Runs `ragworks.eval.calibrate` for offline:lexical and offline:dense (when installed) on:
- BEGIN dev (Wizard of Wikipedia), faithfulness = "Fully attributable" (430 responses);
- the SQuAD 2.0 non-answer set (test articles, see `benchmarks/_nonanswers.py`), answer_relevance;
- SciFact test claims with the abstracts people judged relevant vs BM25's top unjudged abstract,
  context_relevance (see `benchmarks/public_labels.py`).
and writes `src/ragworks/data/judge_agreement.yaml`, which reports read (`ragworks.eval.agreement`).

    python benchmarks/judge_agreement.py [--data ../shared/data] [--no-dense] [--check]

`--check` writes nothing and exits 1 when a figure differs from the shipped file by more than 0.005.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from public_labels import begin_labels, nonanswer_labels, scifact_labels
from ragworks.embeddings import dense_available
from ragworks.eval.calibrate import calibrate

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "src" / "ragworks" / "data" / "judge_agreement.yaml"
SETS = (
    ("begin", "faithfulness", "BEGIN dev (WoW)", "begin-dev"),
    ("nonanswers", "answer_relevance", "SQuAD 2.0 non-answers (test)", "squad2-dev-5"),
    ("scifact", "context_relevance", "SciFact test (BM25 negatives)", "scifact"),
)
HEADER = """\
# Agreement of the offline judges with people on public human-labelled data, as measured by
# `ragworks eval calibrate` (written by benchmarks/judge_agreement.py; do not edit by hand).
# auroc: the judge's score for the people's positive label; kappa and threshold: Cohen's kappa at
# the kappa-maximising threshold on that set (optimistic: chosen on the same rows).
"""


def measure(data: Path, *, dense: bool) -> list[dict[str, object]]:
    """One entry per judge and labelled set."""
    import json

    judges = ["offline:lexical"] + (["offline:dense"] if dense else [])
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, metric, title, folder in SETS:
            if name == "begin":
                rows = begin_labels(data / folder)
            elif name == "scifact":
                rows = scifact_labels(data / folder)
            else:
                rows = nonanswer_labels(data / folder, "test")
            path = Path(tmp) / f"{name}.jsonl"
            path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
            for judge in judges:
                m = calibrate(path, judge=judge, scorers=[metric], experiment="ragworks-judge-agreement")
                got = m.metrics[metric]
                entries.append(
                    {
                        "judge": judge,
                        "metric": metric,
                        "dataset": title,
                        "n": got.n,
                        "positives": got.positives,
                        "auroc": round(got.auroc.value, 4),
                        "auroc_ci": [round(got.auroc.low, 4), round(got.auroc.high, 4)],
                        "kappa": round(got.kappa.value, 4),
                        "kappa_ci": [round(got.kappa.low, 4), round(got.kappa.high, 4)],
                        "accuracy": round(got.accuracy.value, 4),
                        "threshold": got.threshold,
                        "mlflow_run": m.run_id,
                    }
                )
                print(
                    f"{judge:<16} {metric:<17} {title:<30} AUROC {got.auroc.value:.4f} "
                    f"kappa {got.kappa.value:.4f} threshold {got.threshold}"
                )
    return entries


def main(argv: list[str] | None = None) -> int:
    """Measure, then write (or check) the shipped agreement file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--no-dense", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    entries = measure(args.data, dense=dense_available() and not args.no_dense)
    if args.check:
        shipped = {(e["judge"], e["metric"]): e for e in yaml.safe_load(SHIPPED.read_text())["agreement"]}
        # A measurement the shipped file lacks is drift too: the file must say what was measured.
        drift = [
            e
            for e in entries
            if (e["judge"], e["metric"]) not in shipped
            or abs(e["auroc"] - shipped[(e["judge"], e["metric"])]["auroc"]) > 0.005
        ]
        print("OK: matches the shipped file" if not drift else f"DRIFT: {drift}")
        return 1 if drift else 0
    for e in entries:
        e.pop("mlflow_run")
    SHIPPED.write_text(HEADER + yaml.safe_dump({"agreement": entries}, sort_keys=False), encoding="utf-8")
    print(f"wrote {SHIPPED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
