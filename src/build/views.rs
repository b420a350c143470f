//! Store views: the directories that appear as the store directory inside
//! sandboxes. A build sees its input closure there, each input on a mount
//! point of its own, and creates its outputs there, on the store's file
//! system.
//!
//! A view outlives the build: the realise keeps one per concurrent build
//! and hands it to the next with the mount points it lacks made and
//! everything else removed (other closures' mount points, whatever the
//! previous builder left). Builds along a dependency chain have closures
//! that mostly overlap, so a build makes and removes inodes only for the
//! difference, not for its whole closure: a file system's inode allocator
//! (ext4's above all) slows down as freed inodes pile up, and an overlay
//! over a tmpfs of mount points costs a lookup through two layers per bind.
//! The sandbox then binds each input onto a plain directory entry.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::store::{StoreError, make_writable_recursive};

/// The views of one realise.
pub struct Views {
    /// Where the views are made (in the store's scratch space: the same
    /// file system as the store, so outputs are renamed, not copied).
    base: PathBuf,
    /// The store directory on the host, where inputs are looked at.
    store: PathBuf,
    slots: Mutex<Vec<Slot>>,
}

/// One view and what is in it.
struct Slot {
    dir: PathBuf,
    /// Its mount points (and copied symlinks), by base name. Empty while a
    /// build holds the view: the [`View`] has them.
    points: HashMap<String, Point>,
    busy: bool,
}

/// What stands for an input in a view.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Point {
    /// An empty directory, for a directory input to be bound on.
    Dir,
    /// An empty file, for a file input.
    File,
    /// The input's own symlink, copied: a bind would follow it, inside,
    /// where the host's paths are still visible.
    Symlink(PathBuf),
}

/// A view held by one build; it goes back to the realise when dropped.
pub struct View<'a> {
    views: &'a Views,
    index: usize,
    dir: PathBuf,
    points: HashMap<String, Point>,
}

impl Views {
    /// No views yet: they are made under `base` as builds need them.
    pub fn new(base: PathBuf, store: PathBuf) -> Views {
        Views {
            base,
            store,
            slots: Mutex::new(Vec::new()),
        }
    }

    /// A view showing exactly `inputs` (base names in the store), with
    /// nothing else in it: the free view that has most of them already.
    pub fn take(&self, inputs: &BTreeSet<String>) -> Result<View<'_>, StoreError> {
        let (index, dir, points) = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let best = slots
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.busy)
                .max_by_key(|(_, s)| inputs.iter().filter(|i| s.points.contains_key(*i)).count())
                .map(|(i, _)| i);
            let index = match best {
                Some(i) => i,
                None => {
                    let dir = self.base.join(slots.len().to_string());
                    slots.push(Slot {
                        dir,
                        points: HashMap::new(),
                        busy: false,
                    });
                    slots.len() - 1
                }
            };
            let slot = &mut slots[index];
            slot.busy = true;
            (index, slot.dir.clone(), std::mem::take(&mut slot.points))
        };
        let mut view = View {
            views: self,
            index,
            dir,
            points,
        };
        // On failure the view goes back empty-handed: its next holder finds
        // what is left on disk unknown, and removes it.
        if let Err(e) = view.prepare(&self.store, inputs) {
            view.points.clear();
            return Err(e);
        }
        Ok(view)
    }
}

impl View<'_> {
    /// The directory that appears as the store inside the sandbox.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the input `name` must be bound (a symlink is there already).
    pub fn needs_bind(&self, name: &str) -> bool {
        !matches!(self.points.get(name), Some(Point::Symlink(_)))
    }

    /// Removes what `inputs` do not name and what the last builder changed,
    /// then makes the mount points missing.
    fn prepare(&mut self, store: &Path, inputs: &BTreeSet<String>) -> Result<(), StoreError> {
        let write = |path: &Path, source| StoreError::Write {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| write(&self.dir, e))?;
        let entries = std::fs::read_dir(&self.dir).map_err(|source| StoreError::Read {
            path: self.dir.clone(),
            source,
        })?;
        // The points standing that this build needs; whatever the listing
        // does not show (a symlink the last builder removed) is made again.
        let mut kept = HashMap::with_capacity(inputs.len());
        // Mount points of other closures, empty (nothing can write into a
        // mount point while its input is bound on it): renamed for an input
        // that needs one of their kind, which frees and allocates no inode.
        let mut spare: Vec<(PathBuf, Point, Option<std::fs::FileType>)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Read {
                path: self.dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            let ty = entry.file_type().ok();
            let standing = name
                .to_str()
                .and_then(|n| self.points.remove_entry(n))
                .filter(|(_, p)| p.stands(|| entry.path(), ty));
            match standing {
                Some((n, p)) if inputs.contains(&n) => {
                    kept.insert(n, p);
                }
                Some((_, p @ (Point::Dir | Point::File))) => spare.push((entry.path(), p, ty)),
                _ => {
                    let path = entry.path();
                    remove(&path, ty).map_err(|e| write(&path, e))?;
                }
            }
        }
        self.points = kept;
        for name in inputs {
            if self.points.contains_key(name) {
                continue;
            }
            let point = Point::of(&store.join(name));
            let at = self.dir.join(name);
            match spare.iter().position(|(_, p, _)| *p == point) {
                Some(i) => {
                    let (from, _, _) = spare.swap_remove(i);
                    std::fs::rename(&from, &at).map_err(|source| StoreError::Rename {
                        from,
                        to: at.clone(),
                        source,
                    })?;
                }
                None => point.make(&at).map_err(|e| write(&at, e))?,
            }
            self.points.insert(name.clone(), point);
        }
        for (path, _, ty) in spare {
            remove(&path, ty).map_err(|e| write(&path, e))?;
        }
        Ok(())
    }
}

impl Drop for View<'_> {
    fn drop(&mut self) {
        let mut slots = self.views.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get_mut(self.index) {
            slot.points = std::mem::take(&mut self.points);
            slot.busy = false;
        }
    }
}

impl Point {
    /// What stands for the store object at `source`. One that is missing
    /// gets a directory: the sandbox's bind then fails, naming it.
    fn of(source: &Path) -> Point {
        match std::fs::symlink_metadata(source) {
            Ok(m) if m.file_type().is_symlink() => std::fs::read_link(source)
                .map(Point::Symlink)
                .unwrap_or(Point::Dir),
            Ok(m) if !m.is_dir() => Point::File,
            _ => Point::Dir,
        }
    }

    fn make(&self, at: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        match self {
            Point::Dir => std::fs::DirBuilder::new().mode(0o755).create(at),
            Point::File => std::fs::File::create(at).map(drop),
            Point::Symlink(target) => std::os::unix::fs::symlink(target, at),
        }
    }

    /// Whether the entry at `at()` (of type `ty`, from the directory listing)
    /// is still this point. A mount point cannot be changed while its input
    /// is bound on it, but a copied symlink can be removed and made again
    /// by the builder, which owns the view.
    fn stands(&self, at: impl FnOnce() -> PathBuf, ty: Option<std::fs::FileType>) -> bool {
        let Some(ty) = ty else { return false };
        match self {
            Point::Dir => ty.is_dir(),
            Point::File => ty.is_file(),
            Point::Symlink(target) => {
                ty.is_symlink() && std::fs::read_link(at()).is_ok_and(|t| &t == target)
            }
        }
    }
}

/// Removes one entry of a view, read-only directories included.
fn remove(path: &Path, ty: Option<std::fs::FileType>) -> std::io::Result<()> {
    if ty.is_some_and(|t| t.is_dir()) {
        // A mount point is empty: one call. What a builder left may not be.
        if std::fs::remove_dir(path).is_ok() {
            return Ok(());
        }
        make_writable_recursive(path);
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}
