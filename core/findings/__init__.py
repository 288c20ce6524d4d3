"""What may be wrong with the data: likely mislabelled images, duplicates and leaks, outliers, class balance.

Pure computation on pooled features (passed in by the caller: tlzoo.engine.features
gets them through the activation cache) and small perceptual hashes of the files;
nothing here builds a model, and nothing is ever moved or deleted. `find.find_issues`
runs every finding; `issues` holds what they produce and writes issues.csv.
`logistic` is the linear probe that `tlzoo rank` shares.
"""
