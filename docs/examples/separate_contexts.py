"""A fork child, then a spawn child, sharing nothing: nothing to report."""

import multiprocessing


def work(name):
    print("child:", name)


def main():
    for method in ("fork", "spawn"):
        child = multiprocessing.get_context(method).Process(target=work, args=(method,))
        child.start()
        child.join()
    print("parent: done")


if __name__ == "__main__":
    main()
