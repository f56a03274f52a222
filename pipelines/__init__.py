"""The user's commands: wiring config, data, modules, tracking and tuning together."""
