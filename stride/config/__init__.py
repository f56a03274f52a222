"""Config schema, recipes and loading."""

from stride.config.loading import (
                                   config_to_dict,
                                   config_to_yaml,
                                   flatten,
                                   load_config,
                                   recipe_names,
                                   set_dotted,
                                   validate,
)
from stride.config.schema import StrideConfig

__all__ = ["StrideConfig", "config_to_dict", "config_to_yaml", "flatten", "load_config", "recipe_names",
           "set_dotted", "validate"]
