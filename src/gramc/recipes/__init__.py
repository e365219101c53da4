"""Recipes: the composition of components into a product (as torchtune keeps recipes apart from
its library). A recipe may import every stage; no stage imports a recipe. The doctor's YAML
"recipes" (`gramc/doctor/recipes/*.yaml`) are something else: settings a run is checked against."""
