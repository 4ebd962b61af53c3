"""The HTTP surface beside the Gradio tabs: the REST API, logins and keys, metrics, the TensorBoard proxy."""
