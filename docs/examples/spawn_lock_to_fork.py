"""A Lock from the spawn context handed to a fork child: works, but mixes contexts."""

import multiprocessing


def work(lock):
    with lock:
        print("child: got the lock")


def main():
    lock = multiprocessing.get_context("spawn").Lock()
    child = multiprocessing.get_context("fork").Process(target=work, args=(lock,))
    child.start()
    child.join()
    print("parent: child exited with", child.exitcode)


if __name__ == "__main__":
    main()
