"""Tasks: the interface (`base`) and the registered tasks; importing this package registers every module's task
(stride.plugins scans it; a task of your own is a plugin module)."""

from stride.plugins import import_submodules
from stride.tasks.base import DataFacts, Task, get_task, register_task, task_names

import_submodules(__name__)

__all__ = ["DataFacts", "Task", "get_task", "register_task", "task_names"]
