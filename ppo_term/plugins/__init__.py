"""The plugin system: `hookspecs` is the contract, `manager` finds and loads plugins."""
