"""The engine side: the litellm client to vLLM, the vLLM launcher, the base model's preparation."""
