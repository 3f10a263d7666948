//! Every console action, declared once: name, default keys, scopes,
//! description, whether it changes anything.

/// Where an action applies. One key may mean different things in different
/// scopes (Esc closes the help and cancels a dialog), never two things in one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// The main screen.
    Main,
    /// The help overlay.
    Help,
    /// The confirmation dialog.
    Dialog,
}

impl Scope {
    pub fn title(self) -> &'static str {
        match self {
            Scope::Main => "Main screen",
            Scope::Help => "Help",
            Scope::Dialog => "Confirmation dialog",
        }
    }
}

/// Everything a key can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Help,
    Quit,
    Back,
    Filter,
    Jump,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    NextPane,
    PrevPane,
    SortName,
    SortState,
    SortOwner,
    SortAge,
    SortUuid,
    SortReverse,
    PauseEvents,
    FenceOff,
    Reboot,
    Start,
    ConfirmDown,
    CloseHelp,
    Confirm,
    Cancel,
    SwitchButton,
    Press,
}

/// The declaration of one action.
#[derive(Debug, Clone, Copy)]
pub struct ActionInfo {
    pub action: Action,
    /// The name used in `[console.keys]`.
    pub name: &'static str,
    pub keys: &'static [&'static str],
    pub scopes: &'static [Scope],
    pub description: &'static str,
    /// Changes a VM: hidden (and refused) in read-only mode.
    pub mutating: bool,
    /// Short label for the hint bar, if the action is shown there.
    pub hint: Option<&'static str>,
}

const MAIN: &[Scope] = &[Scope::Main];
const MAIN_HELP: &[Scope] = &[Scope::Main, Scope::Help];

macro_rules! act {
    ($a:ident, $name:literal, [$($k:literal),*], $scopes:expr, $desc:literal, $mutating:literal, $hint:expr) => {
        ActionInfo {
            action: Action::$a,
            name: $name,
            keys: &[$($k),*],
            scopes: $scopes,
            description: $desc,
            mutating: $mutating,
            hint: $hint,
        }
    };
}

/// Every action, in help order.
pub const ACTIONS: &[ActionInfo] = &[
    act!(
        Help,
        "help",
        ["?", "f1"],
        MAIN,
        "Show this help",
        false,
        Some("help")
    ),
    act!(
        Quit,
        "quit",
        ["q", "ctrl-c"],
        MAIN,
        "Quit the console",
        false,
        Some("quit")
    ),
    act!(
        Back,
        "back",
        ["esc"],
        MAIN,
        "Back: clear the filter, resume the event pane",
        false,
        None
    ),
    act!(
        Filter,
        "filter",
        ["/"],
        MAIN,
        "Filter domains: words match name, state, owner or uuid; !word excludes",
        false,
        Some("filter")
    ),
    act!(
        Jump,
        "jump",
        [":"],
        MAIN,
        "Jump to a domain or node by name, uuid or id (:q quits)",
        false,
        Some("jump")
    ),
    act!(
        Up,
        "up",
        ["up", "k"],
        MAIN_HELP,
        "Move up (scroll the event pane when it has focus)",
        false,
        None
    ),
    act!(
        Down,
        "down",
        ["down", "j"],
        MAIN_HELP,
        "Move down",
        false,
        None
    ),
    act!(
        PageUp,
        "page-up",
        ["pgup", "ctrl-b"],
        MAIN_HELP,
        "One page up",
        false,
        None
    ),
    act!(
        PageDown,
        "page-down",
        ["pgdn", "ctrl-f"],
        MAIN_HELP,
        "One page down",
        false,
        None
    ),
    act!(
        Top,
        "top",
        ["home", "g"],
        MAIN_HELP,
        "First row (newest event)",
        false,
        None
    ),
    act!(
        Bottom,
        "bottom",
        ["end", "G"],
        MAIN_HELP,
        "Last row (oldest event)",
        false,
        None
    ),
    act!(
        NextPane,
        "next-pane",
        ["tab"],
        MAIN,
        "Focus the next pane (domains, events, nodes)",
        false,
        Some("pane")
    ),
    act!(
        PrevPane,
        "prev-pane",
        ["backtab"],
        MAIN,
        "Focus the previous pane",
        false,
        None
    ),
    act!(
        SortName,
        "sort-name",
        ["1"],
        MAIN,
        "Sort domains by name (again: reverse)",
        false,
        Some("sort")
    ),
    act!(
        SortState,
        "sort-state",
        ["2"],
        MAIN,
        "Sort domains by state",
        false,
        None
    ),
    act!(
        SortOwner,
        "sort-owner",
        ["3"],
        MAIN,
        "Sort domains by owner node",
        false,
        None
    ),
    act!(
        SortAge,
        "sort-age",
        ["4"],
        MAIN,
        "Sort domains by time in state",
        false,
        None
    ),
    act!(
        SortUuid,
        "sort-uuid",
        ["5"],
        MAIN,
        "Sort domains by uuid",
        false,
        None
    ),
    act!(
        SortReverse,
        "sort-reverse",
        ["I"],
        MAIN,
        "Reverse the sort order",
        false,
        None
    ),
    act!(
        PauseEvents,
        "pause-events",
        ["p"],
        MAIN,
        "Pause or resume the event pane",
        false,
        Some("pause")
    ),
    act!(
        FenceOff,
        "fence-off",
        ["F"],
        MAIN,
        "Fence off (power off) the selected VM, after confirmation",
        true,
        Some("fence")
    ),
    act!(
        Reboot,
        "reboot",
        ["R"],
        MAIN,
        "Reboot the selected VM, after confirmation",
        true,
        Some("reboot")
    ),
    act!(
        Start,
        "start",
        ["S"],
        MAIN,
        "Start (power on) the selected VM, after confirmation",
        true,
        Some("start")
    ),
    act!(
        ConfirmDown,
        "confirm-down",
        ["D"],
        MAIN,
        "Confirm the selected departed node down (nodes pane): you assert it is off; fenceline then answers off for its lost VMs",
        true,
        None
    ),
    act!(
        CloseHelp,
        "close-help",
        ["esc", "?", "q"],
        &[Scope::Help],
        "Close the help",
        false,
        None
    ),
    act!(
        Confirm,
        "confirm",
        ["y"],
        &[Scope::Dialog],
        "Confirm the action",
        false,
        None
    ),
    act!(
        Cancel,
        "cancel",
        ["n", "esc"],
        &[Scope::Dialog],
        "Cancel",
        false,
        None
    ),
    act!(
        SwitchButton,
        "switch-button",
        ["tab", "left", "right"],
        &[Scope::Dialog],
        "Move between Cancel and the action button",
        false,
        None
    ),
    act!(
        Press,
        "press",
        ["enter"],
        &[Scope::Dialog],
        "Press the focused button (Cancel at first)",
        false,
        None
    ),
];

/// Actions that must keep at least one key, or the console could not be left.
pub(super) const MUST_BE_BOUND: &[Action] = &[Action::Quit, Action::CloseHelp, Action::Cancel];

/// Keys of the filter and jump prompts; fixed, listed in the help.
pub const PROMPT_KEYS: &[(&str, &str)] = &[
    ("enter", "Apply (jump: go to the match)"),
    ("esc", "Cancel (filter: restore the previous filter)"),
    ("backspace", "Delete a character"),
    ("ctrl-u", "Clear the input"),
];

pub fn info(action: Action) -> &'static ActionInfo {
    ACTIONS
        .iter()
        .find(|a| a.action == action)
        .expect("every action is declared in ACTIONS")
}
