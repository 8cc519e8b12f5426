"""scikit-learn uses the estimator as it uses its own: clone, cross-validation, grid search."""

import numpy as np
from helpers import color_images
from sklearn.base import clone, is_classifier
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score

from diti_sd import DiTiFewShotClassifier


def tiny(model, **kw):
    return DiTiFewShotClassifier(model=str(model), recipe="tiny", steps=4, progress=False,
                                 overrides={"score.rounds": [[4, 1]]}, **kw)


def manual_cv(estimator, X, y, folds):
    scores = []
    for train, test in folds:
        fitted = clone(estimator).fit([X[i] for i in train], [y[i] for i in train])
        scores.append(fitted.score([X[i] for i in test], [y[i] for i in test]))
    return np.array(scores)


def test_clone_and_tags(tiny_model_dir):
    clf = tiny(tiny_model_dir, rank=2)
    assert is_classifier(clf)
    copy = clone(clf)
    assert copy is not clf and copy.get_params() == clf.get_params()


def test_cross_val_score_and_grid_search_on_lists_of_images(tiny_model_dir):
    X, y = color_images(12, seed=21)
    folds = list(StratifiedKFold(2).split(X, y))
    clf = tiny(tiny_model_dir, score_window=(0, 250))
    scores = cross_val_score(clf, X, y, cv=StratifiedKFold(2))
    assert np.array_equal(scores, manual_cv(clf, X, y, folds))

    grid = GridSearchCV(tiny(tiny_model_dir), {"score_window": [(0, 250), (0, 1000)]}, cv=StratifiedKFold(2))
    grid.fit(X, y)
    for i, params in enumerate(grid.cv_results_["params"]):
        expected = manual_cv(tiny(tiny_model_dir, **params), X, y, folds).mean()
        assert grid.cv_results_["mean_test_score"][i] == expected
    assert grid.best_params_["score_window"] in [(0, 250), (0, 1000)]
    assert list(grid.predict(X[:3])) and set(grid.classes_) == {"c0", "c1", "c2"}
