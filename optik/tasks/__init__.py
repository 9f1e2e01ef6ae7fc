"""Tasks: what is special about classification, detection, ... behind the one Task interface."""

from optik.tasks import classify, detect, generate, segment  # noqa: F401  (registers)
from optik.tasks.base import TASKS, Task, TaskData, get_task, register_task

__all__ = ["TASKS", "Task", "TaskData", "get_task", "register_task"]
