"""The job: a `<name>.prompt.yaml` file, its naming rules, its schema and how it is read."""
