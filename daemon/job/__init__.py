"""The job: a `<name>.prompt.yaml` file, which names are jobs, its keys, schema, how it is read."""
