"""placeholder: filled by #20."""
