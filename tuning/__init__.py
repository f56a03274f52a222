"""Ray Tune searches over stride configs, multi-worker training with Ray Train, tracked in MLflow.

Ray is imported lazily (inside functions), so loading and checking a spec stays fast.
"""

from stride.tuning.cluster import TrialResources
from stride.tuning.spec import ResolvedSearch, SearchSpec, load_search, spec_names

__all__ = ["ResolvedSearch", "SearchResult", "SearchSpec", "TrialResources", "load_search", "resume_search",
           "run_search", "spec_names"]


def __getattr__(name: str):
    if name in ("run_search", "resume_search", "SearchResult"):
        from stride.tuning import search

        return getattr(search, name)
    raise AttributeError(name)
