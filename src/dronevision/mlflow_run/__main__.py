"""``python -m dronevision.mlflow_run sync out_dir=<dir>``: see :mod:`dronevision.mlflow_run.sync`."""

from dronevision.mlflow_run.sync import main

if __name__ == "__main__":
    main()
