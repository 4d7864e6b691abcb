//! [`TaskSet`]: up to `N` tasks kept together in a `static` — a server's connections — so that
//! the stop cancels them all at once ([`TaskSet::cancel`], from `on_detach`), and a slot is used
//! again once its task has finished. Like [`super::TaskCell`], a cancel is not lost: a task kept
//! after it is cancelled at once.
//!
//! IRQL: every function at <= `DISPATCH_LEVEL` (a spin lock guards the slots; the handles are
//! dropped and cancelled after it is released).

use super::TaskHandle;
use crate::spin_lock::SpinLock;

/// Up to `N` tasks, cancelled together.
pub struct TaskSet<const N: usize> {
    slots: SpinLock<Slots<N>>,
}

struct Slots<const N: usize> {
    tasks: [Option<TaskHandle>; N],
    cancelled: bool,
}

impl<const N: usize> TaskSet<N> {
    /// An empty set, not cancelled.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            slots: SpinLock::new(Slots {
                tasks: [const { None }; N],
                cancelled: false,
            }),
        }
    }

    /// Keeps `task` in a free slot (an empty one, or one whose task finished); hands it back when
    /// all `N` hold running tasks. In a cancelled set, the task is cancelled (and let go).
    ///
    /// # Errors
    /// The task back, when every slot holds a running task.
    pub fn keep(&self, task: TaskHandle) -> Result<(), TaskHandle> {
        let mut slots = self.slots.lock();
        if slots.cancelled {
            drop(slots);
            task.cancel();
            return Ok(());
        }
        let Some(slot) = slots
            .tasks
            .iter_mut()
            .find(|slot| slot.as_ref().is_none_or(TaskHandle::is_finished))
        else {
            return Err(task);
        };
        let finished = slot.replace(task);
        drop(slots);
        drop(finished);
        Ok(())
    }

    /// How many kept tasks have not finished.
    #[must_use]
    pub fn running(&self) -> usize {
        let slots = self.slots.lock();
        slots
            .tasks
            .iter()
            .flatten()
            .filter(|task| !task.is_finished())
            .count()
    }

    /// Cancels every kept task and lets them go; the set stays cancelled ([`TaskSet::keep`])
    /// until [`TaskSet::reset`].
    pub fn cancel(&self) {
        let mut slots = self.slots.lock();
        slots.cancelled = true;
        let tasks = core::mem::replace(&mut slots.tasks, [const { None }; N]);
        drop(slots);
        for task in tasks.into_iter().flatten() {
            task.cancel();
        }
    }

    /// Empties the set and ends its cancelled state (a driver's next start); kept tasks are let
    /// go, not cancelled.
    pub fn reset(&self) {
        let mut slots = self.slots.lock();
        slots.cancelled = false;
        let tasks = core::mem::replace(&mut slots.tasks, [const { None }; N]);
        drop(slots);
        drop(tasks);
    }
}

impl<const N: usize> Default for TaskSet<N> {
    fn default() -> Self {
        Self::new()
    }
}
