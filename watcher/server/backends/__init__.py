"""Model backends the embedded server answers chat completions with."""
