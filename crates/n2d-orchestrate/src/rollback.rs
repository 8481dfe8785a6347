//! Undo actions for a multi-step change that failed midway.

/// Undo actions, run newest first when dropped unless the operation commits. Nothing is undone
/// while a panic unwinds (a bug, or a simulated kill in the tests): the change's journal stays
/// and the next command's recovery deals with it, as after a SIGKILL.
#[derive(Default)]
pub struct Rollback<'a> {
    undo: Vec<Box<dyn FnOnce() + Send + 'a>>,
}

impl<'a> Rollback<'a> {
    pub fn push(&mut self, f: impl FnOnce() + Send + 'a) {
        self.undo.push(Box::new(f));
    }

    /// The change succeeded: nothing is undone.
    pub fn commit(mut self) {
        self.undo.clear();
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.undo.clear();
            return;
        }
        while let Some(f) = self.undo.pop() {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn undoes_newest_first_unless_committed() {
        let log = Mutex::new(Vec::new());
        {
            let mut r = Rollback::default();
            r.push(|| log.lock().unwrap().push(1));
            r.push(|| log.lock().unwrap().push(2));
        }
        assert_eq!(*log.lock().unwrap(), [2, 1]);
        let mut r = Rollback::default();
        r.push(|| log.lock().unwrap().push(3));
        r.commit();
        assert_eq!(*log.lock().unwrap(), [2, 1]);
    }
}
