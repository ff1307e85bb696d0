"""The classic baseline every Transformer here must beat: TF-IDF features + logistic regression,
trained on the same train split and scored on the same test split."""

from __future__ import annotations

import time


def tfidf_logistic_regression(train_texts, train_labels, test_texts, seed: int):
    """Predicted label ids for `test_texts`, and the fit time in seconds."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    started = time.perf_counter()
    model = make_pipeline(
        TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1, max_features=100_000),
        LogisticRegression(C=10.0, max_iter=2000, random_state=seed),
    )
    model.fit(train_texts, train_labels)
    return model.predict(test_texts), round(time.perf_counter() - started, 2)
