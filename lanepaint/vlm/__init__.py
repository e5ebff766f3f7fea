"""Vision-language model use: prompts, answer parsing, judge panels, batched generation."""
