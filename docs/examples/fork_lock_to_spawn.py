"""A Lock from the fork context handed to a spawn child: the classic crash."""

import multiprocessing


def work(lock):
    with lock:
        print("child: got the lock")


def main():
    lock = multiprocessing.get_context("fork").Lock()
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=work, args=(lock,))
    child.start()
    child.join()


if __name__ == "__main__":
    main()
