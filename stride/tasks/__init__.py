"""Tasks: the interface (`base`) and the registered tasks; importing this package registers them all."""

from stride.tasks.base import (DataFacts, Evaluation, ExportedModel, Task, TensorSpec, get_task, register_task,
                               task_names)
from stride.tasks import classification  # noqa: F401,E402  (registers classification and sequence_classification)
from stride.tasks import detection  # noqa: F401,E402
from stride.tasks import captioning  # noqa: F401,E402

__all__ = ["DataFacts", "Evaluation", "ExportedModel", "Task", "TensorSpec", "get_task", "register_task",
           "task_names"]
