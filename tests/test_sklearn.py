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


def test_scikit_learns_own_parameter_checks():
    # __init__ and set_params store and nothing else; every value is checked in fit (test_validation.py)
    from sklearn.utils.estimator_checks import (
        check_do_not_raise_errors_in_init_or_set_params,
        check_get_params_invariance,
        check_no_attributes_set_in_init,
        check_parameters_default_constructible,
        check_set_params,
    )

    name = DiTiFewShotClassifier.__name__
    for check in (check_set_params, check_get_params_invariance, check_no_attributes_set_in_init,
                  check_parameters_default_constructible, check_do_not_raise_errors_in_init_or_set_params):
        check(name, DiTiFewShotClassifier())


def test_our_not_fitted_error_is_scikit_learns():
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    from diti_sd.classifier import NotFittedError as Ours
    from diti_sd.errors import DitiError

    assert issubclass(Ours, NotFittedError) and issubclass(Ours, DitiError)
    try:
        DiTiFewShotClassifier().class_contexts()
    except NotFittedError as err:
        assert isinstance(err, Ours)
    else:
        raise AssertionError("an unfitted estimator answered")
    try:
        check_is_fitted(DiTiFewShotClassifier())
    except NotFittedError:
        pass
