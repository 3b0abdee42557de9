"""Root conftest: the pytester fixture for the plugin's own tests (tests/plugin)."""

pytest_plugins = ["pytester"]
