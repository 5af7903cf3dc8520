"""Monitoring the served model: drift of its applicants and answers from the reference."""
