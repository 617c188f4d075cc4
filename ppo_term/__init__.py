"""ppo-term: a terminal experiment manager for PPO fine-tuning of language models."""

from ppo_term.plugins.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
