"""What to run: experiment rows and recipes, the budget's ladder, the plan (see ``runs/__init__``)."""
