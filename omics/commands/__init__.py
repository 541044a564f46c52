"""Commands that are not one stage's: score, compare, demo."""
