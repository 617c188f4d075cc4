"""The PPO core: importable and runnable with no UI at all."""
