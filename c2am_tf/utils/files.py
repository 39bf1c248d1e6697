"""Files without TensorFlow: listing image files (``c2am_tf.utils.image_io`` reads them), output names, and
atomic writes (a temporary file in the same folder, then a rename: a run killed mid-write leaves the previous file, or
none, never a truncated one)."""

import contextlib
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time

from c2am_tf.utils.errors import InputError
from c2am_tf.utils.limits import regular_file_problem

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: temporary files are made 0600, their final mode is what open() would have given


class OutputError(InputError):
    """An output that cannot be written (a read-only folder, a full disk, a name too long) or must not be (it would
    replace an input or a file the run did not write); one line naming the file."""


def _output_error(path, err):
    return OutputError(f"{path}: cannot write it ({err.strerror or err})")


def make_folder(directory, path=None):
    """``os.makedirs(directory, exist_ok=True)``, an ``OSError`` (read-only, name too long, a file in the way)
    becoming an ``OutputError`` naming ``path`` (default: the folder): every output folder is made here."""
    path = directory if path is None else path
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        raise _output_error(path, err) from None


def write_atomically(path, data):
    """Writes ``data`` (bytes or str, UTF-8) to ``path`` atomically; creates the folder.

    The temporary file beside ``path`` is created exclusively under an unpredictable name (``mkstemp``:
    ``O_CREAT|O_EXCL|O_NOFOLLOW``), so a link planted in the output folder is never followed, and two writers never
    share one; the rename replaces a link at ``path`` itself, never its target. A failed write (full disk, read-only
    folder, name too long) leaves no temporary file and raises ``OutputError``.
    """
    directory = os.path.dirname(os.path.abspath(path))
    make_folder(directory, path)
    data = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)[:200]}.", suffix=".tmp", dir=directory)
    except OSError as err:
        raise _output_error(path, err) from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(err, OSError):
            raise _output_error(path, err) from None
        raise


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path for a library that writes a file or folder itself (Keras's ``save``, a TFRecord writer,
    ``tf.saved_model.save``): it lies in a fresh private folder beside ``path`` (``mkdtemp``: 0700, an
    unpredictable name), so nothing planted can be followed; on success it is renamed to ``path``. The private
    folder is removed either way; an ``OSError`` becomes an ``OutputError`` naming ``path``.

    >>> import tempfile, os
    >>> target = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> with atomic_path(target) as tmp:
    ...     _ = open(tmp, "w").write("done")
    >>> open(target).read(), [n for n in os.listdir(os.path.dirname(target)) if n != "a.txt"]
    ('done', [])
    """
    directory = os.path.dirname(os.path.abspath(path))
    make_folder(directory, path)
    try:
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(path)[:200]}.", suffix=".tmp", dir=directory)
    except OSError as err:
        raise _output_error(path, err) from None
    try:
        tmp = os.path.join(staging, os.path.basename(path))
        yield tmp
        if os.path.isdir(tmp):
            os.chmod(tmp, 0o777 & ~_UMASK)
        os.replace(tmp, path)
    except OSError as err:
        raise _output_error(path, err) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def open_for_append(path):
    """``path`` opened for appending text, never through a link (``O_NOFOLLOW``): a log a run keeps adding to."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as err:
        raise _output_error(path, err) from None
    return os.fdopen(fd, "a", encoding="utf-8")


def write_json_atomically(path, obj, **kwargs):
    """``json.dumps(obj, **kwargs)`` written atomically to ``path``."""
    write_atomically(path, json.dumps(obj, **kwargs))


def inside(path, folder):
    """Whether ``path`` is ``folder`` or lies below it, links resolved."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def replaced_input(path, inputs):
    """The first of ``inputs`` (files or folders) that writing ``path`` would replace: ``path`` itself, one
    lying inside the folder ``path``, or the input folder holding ``path`` where a file is there already (a
    dataset's own file, such as CUB's ``images.txt``, is read from its folder without being named); None when
    writing it leaves every input alone.

    >>> replaced_input("run/model.keras", ["data", "run/model.keras"])
    'run/model.keras'
    >>> replaced_input("export/1", ["export/1/model.keras"]), replaced_input("out.tflite", ["data"])
    ('export/1/model.keras', None)
    """
    for item in inputs:
        if item and inside(item, path):
            return os.fspath(item)
    if os.path.lexists(path) and not os.path.isdir(path):
        for item in inputs:
            if item and os.path.isdir(item) and inside(path, item):
                return os.fspath(item)
    return None


class OutputLock:
    """A run's hold on an output (a folder, or a file such as ``boxes.json``) while it writes there: a second run
    into it is an ``OutputError`` naming the process that holds it, instead of two runs sharing partial files.

    The lock is ``fcntl.flock`` on ``LOCK_PATH`` (``OUT/.c2am_tf.lock`` for a folder, ``.NAME.lock`` beside a file),
    so the kernel releases it when its process dies, however: a stale lock file of a killed run is taken over, never
    waited for. The file names the holder (pid, host, command, start) for the message. Where ``fcntl`` does not exist
    (Windows) nothing is locked.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with OutputLock(folder):
    ...     OutputLock(folder).acquire()
    Traceback (most recent call last):
    ...
    c2am_tf.utils.files.OutputError: ... is being written by another run (pid ...); wait for it to end, or choose another output
    """

    def __init__(self, target):
        self.target = os.fspath(target)
        folder = os.path.isdir(self.target) or self.target.endswith(os.sep)
        self.path = (os.path.join(self.target, ".c2am_tf.lock") if folder else
                     os.path.join(os.path.dirname(os.path.abspath(self.target)), f".{os.path.basename(self.target)}.lock"))
        self._fd, self._made = None, False

    def acquire(self):
        """Takes the lock (creating its folder); returns self. Raises ``OutputError`` when another process holds it."""
        try:
            import fcntl  # POSIX only: on Windows there is no lock
        except ImportError:  # pragma: no cover - Windows
            return self
        self._made = not os.path.isdir(os.path.dirname(self.path))
        make_folder(os.path.dirname(self.path), self.target)
        while self._fd is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except OSError as err:
                raise _output_error(self.path, err) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 512).decode("utf-8", "replace").strip() or "a process"
                os.close(fd)
                raise OutputError(f"{self.target} is being written by another run ({holder}); wait for it to end, "
                                  "or choose another output") from None
            try:  # the file may have been removed by the holder we waited on: lock the one at the path
                same = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue

            os.ftruncate(fd, 0)
            command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv[:4]))
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, {command}, since "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            self._fd = fd
        return self

    def release(self):
        """Removes the lock file and lets go (also done by the kernel should the process die); a folder the lock
        made stays only if the run wrote into it (a refused run leaves nothing)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.remove(self.path)
            os.close(self._fd)
            self._fd = None
            if self._made:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.dirname(self.path))

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def list_images(directory, exclude=None):
    """All image files under ``directory`` (recursive, sorted), leaving out the folder ``exclude``
    (an output folder inside the input folder: a second run must not read the first one's results)."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"image folder not found: {directory}")
    if exclude is not None and inside(directory, exclude):
        exclude = None  # writing into the input folder itself: OutputNames keeps inputs safe
    found, odd = [], []
    for root, dirs, files in os.walk(directory):
        if exclude is not None:
            dirs[:] = [d for d in dirs if not inside(os.path.join(root, d), exclude)]
        for name in files:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                path = os.path.join(root, name)
                problem = regular_file_problem(path)  # a FIFO named x.jpg would block its reader for ever
                (found.append(path) if problem is None else odd.append(f"{path}: {problem}"))
    if odd:

        print(f"warning: skipping {len(odd)} image name{'s' * (len(odd) > 1)} that {'are' if len(odd) > 1 else 'is'}"
              f" not a regular file ({odd[0]}{', ...' if len(odd) > 1 else ''})", file=sys.stderr)
    if not found:
        raise ValueError(f"{directory}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return sorted(found)


def image_paths(inputs, exclude=None):
    """Image files named by ``inputs``: image files and folders (searched recursively, leaving
    out the folder ``exclude``).

    Raises FileNotFoundError for a missing path and ValueError for a folder without images.
    """
    paths = []
    for item in [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs:
        if os.path.isdir(item):
            paths += list_images(item, exclude)
        elif os.path.isfile(item):
            paths.append(os.fspath(item))
        elif (problem := regular_file_problem(item)) != "no such file":  # a FIFO, a socket, a device, a long name
            raise InputError(f"{item}: {problem}")
        else:
            raise FileNotFoundError(f"no such file or folder: {item} (images: {', '.join(IMAGE_EXTENSIONS)})")
    return paths


WRITTEN_RECORD = ".c2am_tf-written"


class WrittenRecord:
    """The files c2am_tf's runs wrote in one output folder (``OUT/.c2am_tf-written``, one path below ``OUT`` a
    line, appended as names are claimed): what a later run may replace without ``--overwrite``, so that a file of
    the user's that only shares an output's name (a labelling tool's ``img0.jpg.json`` beside ``img0.jpg``) is
    never replaced unasked.

    >>> import tempfile, os
    >>> out = tempfile.mkdtemp()
    >>> open(os.path.join(out, "mine.json"), "w").close()
    >>> record = WrittenRecord(out)
    >>> record.add([os.path.join(out, "a.png")])
    >>> record.foreign([os.path.join(out, "a.png"), os.path.join(out, "mine.json")])
    ['mine.json']
    """

    def __init__(self, out_dir):
        self.out_dir = os.fspath(out_dir)
        self.path = os.path.join(self.out_dir, WRITTEN_RECORD)
        try:
            with open(self.path, encoding="utf-8") as f:
                self.names = {line.rstrip("\n") for line in f if line.strip()}
        except (FileNotFoundError, NotADirectoryError):
            self.names = set()
        except (OSError, UnicodeDecodeError) as err:
            raise OutputError(f"{self.path}: unreadable ({err}); remove it, or pass --overwrite") from None

    def _rel(self, path):
        return os.path.relpath(os.path.abspath(path), os.path.abspath(self.out_dir))

    def foreign(self, paths):
        """Those of ``paths`` (below ``OUT``) that exist and that no run recorded: relative to ``OUT``."""
        return [rel for rel in map(self._rel, paths) if rel not in self.names
                and os.path.lexists(os.path.join(self.out_dir, rel))]

    def add(self, paths):
        """Records ``paths`` as written by this run (before the writes: a killed run's names stay its own)."""
        new = [rel for rel in dict.fromkeys(map(self._rel, paths)) if rel not in self.names]
        if new:
            make_folder(self.out_dir, self.path)
            with open_for_append(self.path) as f:
                f.write("".join(rel + "\n" for rel in new))
            self.names.update(new)

    def check(self, paths, overwrite=False, record=True):
        """Raises ``OutputError`` for the first of ``paths`` that a file not written by c2am_tf occupies (unless
        ``overwrite``); then records them all (with ``record``)."""
        foreign = [] if overwrite else self.foreign(paths)
        if foreign:
            more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
            raise OutputError(f"{os.path.join(self.out_dir, foreign[0])}{more}: a file there was not written by "
                              "c2am_tf and would be replaced by this output; pass --overwrite to replace it, or "
                              "choose another output folder")
        if record:
            self.add(paths)


class OutputNames:
    """Names of the files a command writes for its input images: unique, and never an input.

    Every writer that names its outputs after images uses this (predict, tflite_detect,
    extract_boxes overlays, CAM, cue and label files).

    ``layout="mirror"`` keeps each image's path below the inputs' common folder,
    extension included, and appends ``suffix``: ``photos/sub/x.jpg`` -> ``OUT/sub/x.jpg.png``,
    so ``x.jpg``, ``x.png`` and ``sub/x.jpg`` stay apart.

    ``layout="stem"`` gives ``OUT/<stem><suffix>`` for the formats keyed by image name
    (PSA-style CAM and cue files, VOC label PNGs); two images with one stem are an error
    naming both.

    Either way a name that is one of the input files is refused (``ValueError``) before
    anything is written, and so (``OutputError``) is a name that a file not written by c2am_tf occupies, unless
    ``overwrite`` (``WrittenRecord``).

    Where the inputs stream from a dataset and are not known in advance, pass ``root``
    (the dataset's folder, or several) instead of ``paths``: an output folder that
    overlaps a root (is it, lies inside it or holds it) is refused, since its names could
    meet files not yet read; two images with one stem are refused when the second comes.

    Example:
    >>> import tempfile
    >>> out = os.path.join(tempfile.mkdtemp(), "out")
    >>> names = OutputNames(["in/x.jpg", "in/x.png", "in/sub/x.jpg"], out, ".png")
    >>> [os.path.relpath(names(p), out) for p in ["in/x.jpg", "in/x.png", "in/sub/x.jpg"]]
    ['x.jpg.png', 'x.png.png', 'sub/x.jpg.png']
    >>> OutputNames(["a/x.jpg", "b/x.png"], "out", ".npz", layout="stem")("b/x.png")
    Traceback (most recent call last):
    ...
    ValueError: two images would write out/x.npz: a/x.jpg and b/x.png (their names differ only in folder or extension)
    """

    def __init__(self, paths, out_dir, suffix, layout="mirror", root=None, overwrite=False):
        if layout not in ("mirror", "stem"):
            raise ValueError(f"layout must be 'mirror' or 'stem', got {layout!r}")
        paths = [os.fspath(p) for p in paths or ()]
        self.out_dir, self.suffix, self.layout = os.fspath(out_dir), suffix, layout
        self._streaming = root is not None
        if self._streaming:
            roots = [os.fspath(r) for r in ([root] if isinstance(root, (str, os.PathLike)) else root) if r]
            if paths:
                raise ValueError("give the input paths or their root folder, not both")
            for folder in roots:
                if inside(folder, out_dir) or inside(out_dir, folder):
                    raise ValueError(f"output folder {out_dir} overlaps the input folder {folder}: write elsewhere")
            root = roots[0] if roots else os.getcwd()
        folders = [os.path.dirname(os.path.abspath(p)) for p in paths]
        self._root = os.path.abspath(root) if self._streaming else os.path.commonpath(folders) if folders else ""
        inputs = {os.path.realpath(p) for p in paths}
        self._names, self._owner = {}, {}
        for path in paths:
            out = self._claim(path, self._name(path))
            if os.path.realpath(out) in inputs:
                raise ValueError(f"{out} would overwrite an input image; write to another output folder")
        self.overwrite, self._record = overwrite, WrittenRecord(self.out_dir)
        if self._streaming:  # the names come later: any file of the kind written here that no run wrote is refused
            found = []
            if not overwrite and os.path.isdir(self.out_dir):
                for folder, _, files in os.walk(self.out_dir):
                    found += [os.path.join(folder, n) for n in files if n.endswith(suffix)]
            self._record.check(found, overwrite, record=False)
        else:  # checked now, before any work; each name is recorded when it is asked for, to be written
            self._record.check(list(self._names.values()), overwrite, record=False)

    def _claim(self, path, out):
        """Records ``out`` as ``path``'s output; another image already owning it is an error."""
        first = self._owner.setdefault(out, path)
        if first != path:
            raise ValueError(f"two images would write {out}: {first} and {path} "
                             "(their names differ only in folder or extension)")
        self._names[path] = out
        return out

    def _name(self, path):
        if self.layout == "stem":
            return os.path.join(self.out_dir, os.path.splitext(os.path.basename(path))[0] + self.suffix)
        rel = os.path.relpath(os.path.abspath(path), self._root)
        return os.path.join(self.out_dir, rel + self.suffix)

    def __call__(self, path):
        """The output file of one of the input ``path``s (``write_atomically`` creates its folder)."""
        path = os.fspath(path)
        if not self._streaming:
            self._record.add([self._names[path]])
            return self._names[path]
        if path in self._names:
            return self._names[path]
        if self.layout == "stem" or os.path.isabs(path) or os.path.exists(path):
            if self.layout == "mirror" and not inside(path, self._root):
                raise ValueError(f"{path} is not below the input folder {self._root}")
            out = self._name(path)
        else:  # a name, not a file (tfds, synthetic data): nothing on disk to overwrite
            rel = os.path.normpath(path)
            if rel.startswith(".."):
                raise ValueError(f"image name {path!r} leaves the output folder")
            out = os.path.join(self.out_dir, rel + self.suffix)
        out = self._claim(path, out)
        self._record.check([out], self.overwrite)
        return out


def sha256_of(path):
    """The sha256 (hex) of a file's bytes, read in 1 MiB pieces: what a run's header records as a model's
    identity, and what a preset's file is checked against."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()
