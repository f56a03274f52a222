"""The model card: a registered version's description, in markdown."""

from __future__ import annotations

from mlflow.entities import Run

from stride.serving import Evaluation
from stride.tracking.contract import ARCHITECTURE_TAG, DATASET_NAME_TAG, GIT_COMMIT_TAG, RECIPE_TAG, TASK_TAG


def model_card(model_name: str, alias: str, run: Run, evaluation: Evaluation, config_sha256: str,
               gate: str) -> str:
    tags, params = run.data.tags, run.data.params
    rows = [("task", tags.get(TASK_TAG, "?")),
            ("architecture", f"{tags.get(ARCHITECTURE_TAG, '?')} (recipe {tags.get(RECIPE_TAG, '?')})"),
            ("data", f"{tags.get(DATASET_NAME_TAG, '?')} at `{evaluation.dataset_path}`, manifest sha256 "
                     f"`{evaluation.dataset_sha256[:16]}`"),
            ("training run", f"`{run.info.run_id}`, config sha256 `{config_sha256[:16]}`, git "
                             f"`{tags.get(GIT_COMMIT_TAG, 'unknown')[:12]}`"),
            ("optimiser", f"{params.get('optim.name', '?')} lr {params.get('optim.lr', '?')}, "
                          f"{params.get('trainer.max_epochs', '?')} epochs"),
            (f"{evaluation.split} evaluation", evaluation.summary()),
            ("promotion", gate)]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    uri = f"models:/{model_name}@{alias}"
    return f"""### {model_name}

| | |
| --- | --- |
{table}

Input and output: see the model's signature (images are float32 scaled to [0, 1]; normalisation
is inside the network).

```python
from stride.registry import load_model  # checks the files against the digests recorded when they were logged
model = load_model("{uri}")
```

```bash
stride predict --model {uri} image.png
```
"""
