"""Request records, captures and feedback on chat completions."""
