#!/usr/bin/env python3
"""A real (small) model for squall's digits example, on the digits data set that
scikit-learn ships (no download).

    digits.py train MODEL                    train on the training split, save MODEL
    digits.py predict MODEL SLICE SLICES OUT predict the held-out rows whose index is
                                             SLICE modulo SLICES: "index,label,predicted"
    digits.py accuracy DIR OUT               gather DIR/*.csv, check every held-out row is
                                             there once, write "accuracy A" and "samples N"
"""

import pathlib
import pickle
import sys

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC


def split():
    x, y = load_digits(return_X_y=True)
    return train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)


def train(model):
    x_train, _, y_train, _ = split()
    clf = SVC(gamma=0.001, C=10).fit(x_train, y_train)
    pathlib.Path(model).write_bytes(pickle.dumps(clf))
    print(f"trained on {len(y_train)} digits")


def predict(model, part, parts, out):
    clf = pickle.loads(pathlib.Path(model).read_bytes())
    _, x_test, _, y_test = split()
    rows = [i for i in range(len(y_test)) if i % parts == part]
    predicted = clf.predict(x_test[rows]) if rows else []
    with open(out, "w", encoding="utf-8") as f:
        for i, p in zip(rows, predicted):
            f.write(f"{i},{y_test[i]},{p}\n")
    print(f"slice {part} of {parts}: {len(rows)} digits")


def accuracy(folder, out):
    _, _, _, y_test = split()
    seen = {}
    for path in sorted(pathlib.Path(folder).glob("*.csv")):
        for line in path.read_text(encoding="utf-8").splitlines():
            i, label, predicted = (int(v) for v in line.split(","))
            if i in seen:
                sys.exit(f"row {i} predicted twice ({path})")
            seen[i] = label == predicted
    if len(seen) != len(y_test):
        sys.exit(f"{len(seen)} of {len(y_test)} held-out rows were predicted")
    acc = sum(seen.values()) / len(seen)
    pathlib.Path(out).write_text(f"accuracy {acc:.4f}\nsamples {len(seen)}\n", encoding="utf-8")
    print(f"accuracy {acc:.4f} over {len(seen)} digits")


def main(argv):
    commands = {"train": (train, 1), "predict": (predict, 4), "accuracy": (accuracy, 2)}
    if len(argv) < 2 or argv[1] not in commands or len(argv) - 2 != commands[argv[1]][1]:
        sys.exit(__doc__)
    fn, _ = commands[argv[1]]
    args = argv[2:]
    if argv[1] == "predict":
        args = [args[0], int(args[1]), int(args[2]), args[3]]
    fn(*args)


if __name__ == "__main__":
    main(sys.argv)
