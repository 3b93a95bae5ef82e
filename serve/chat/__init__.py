"""Chat completions: the OpenAI request model and the service that answers it."""
