"""This folder ships inside the package as ``rloss.configs`` (data only; see setup.py and
``rloss.training.config_files``). The file makes it a regular package, which editable installs need."""
