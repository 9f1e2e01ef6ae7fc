"""Tasks: what is special about classification, detection, … behind the one Task interface.

Which tasks exist is the catalog's business (:mod:`optik.catalog`); importing this package loads none of them.
"""

from optik.tasks.base import Task, DataSplits, get_task

__all__ = ["Task", "DataSplits", "get_task"]
