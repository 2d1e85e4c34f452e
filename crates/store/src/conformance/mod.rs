//! The conformance suite: the cases every backend ([`crate::Store`] and [`crate::Replicas`]) must pass, run by each
//! backend's test binary against a real database.
//!
//! A backend invokes [`conformance_tests!`](crate::conformance_tests) with an async
//! function returning a fresh, empty, migrated store (or `None` when its database is not
//! available and skipping is allowed); the macro expands to one `#[tokio::test]` per case,
//! so a failure names the case and the backend.

// Test code: a failed unwrap is a failed case, which is what it should be.
#![allow(clippy::unwrap_used)]

pub mod audit;
pub mod batches;
pub mod cancellation;
pub mod deadlines;
pub mod fixtures;
pub mod logs;
pub mod maintenance;
pub mod placement;
pub mod policy;
pub mod registry;
pub mod secrets;
pub mod tasks;

/// Expands to one test per conformance case. `$fresh` is an `async fn() ->
/// Option<Arc<dyn Backing>>`; `None` skips the case (the backend says why, once).
#[macro_export]
macro_rules! conformance_tests {
    ($fresh:path) => {
        $crate::conformance_tests!(@cases $fresh;
            registry::ready_after_migrations,
            registry::a_lone_store_leads_and_keeps_the_lead,
            registry::token_names_are_unique_per_account_and_tokens_are_found_by_secret,
            registry::revoking_a_token_is_recorded_once,
            registry::groups_are_joined_by_name_within_a_scope,
            registry::concurrent_registrations_join_one_group,
            registry::scope_filters_return_what_lies_at_or_below,
            registry::instances_round_trip_and_are_found_by_session,
            registry::heartbeats_are_written_in_one_batch_and_never_go_back,
            registry::instance_counts_agree_with_the_listed_instances,
            registry::group_changes_and_deletion_cascade_to_instances,
            registry::a_declared_group_round_trips_is_joined_by_name_and_outlives_the_empty_group_sweep,
            registry::silent_instances_and_long_empty_groups_are_removed,
            registry::connectors_have_unique_names_per_scope,
            registry::last_success_keeps_the_newest,
            registry::api_keys_round_trip_and_revoke,
            registry::an_admin_key_is_generated_once_on_a_fresh_store,
            registry::no_admin_key_is_generated_on_a_store_in_use,
            tasks::tasks_round_trip_every_field,
            tasks::idempotent_insert_returns_the_first_task_and_refuses_another_body,
            tasks::queued_tasks_come_highest_priority_first_then_oldest,
            tasks::a_claim_assigns_once_and_respects_capacity,
            tasks::claims_are_exact_under_concurrency,
            tasks::transitions_are_fenced_by_attempt,
            tasks::a_report_from_an_instance_that_does_not_hold_the_attempt_changes_nothing,
            tasks::transitions_follow_the_state_machine_and_free_slots,
            tasks::a_lost_running_task_requeues_and_runs_again_on_another_instance,
            tasks::progress_is_fenced_and_only_for_running_tasks,
            tasks::task_lists_filter_and_paginate_newest_first,
            deadlines::tasks_held_by_an_instance_are_its_assigned_and_running_ones,
            deadlines::due_tasks_finds_expired_unacknowledged_and_overrun_tasks,
            deadlines::due_tasks_finds_the_tasks_of_instances_whose_heartbeat_is_too_old,
            deadlines::heartbeats_push_run_deadlines_forward_but_never_back,
            placement::capability_results_replace_older_ones,
            placement::the_selection_log_keeps_order_and_is_pruned_by_age,
            audit::the_audit_log_lists_newest_first_filters_by_scope_and_key_and_prunes_by_age,
            cancellation::a_claim_cancelled_at_any_await_is_all_or_nothing_and_the_store_still_writes,
            batches::a_batch_commits_its_accepted_items_and_refuses_the_others_alone,
            batches::a_submission_is_stored_claimed_with_its_log_and_audit_in_one_write,
            batches::a_caller_that_stops_waiting_leaves_its_writes_whole,
            maintenance::pauses_of_a_group_and_an_instance_round_trip_and_lift,
            maintenance::a_draining_instance_is_never_claimed_for,
            maintenance::a_single_use_instance_takes_its_tasks_and_is_retired_once_they_ended,
            maintenance::a_jit_credential_registers_once_before_it_expires,
            maintenance::the_queue_is_counted_by_shape_largest_first,
            policy::a_concurrency_key_limits_claims_in_its_account_until_one_ends,
            policy::claims_of_one_key_are_exact_under_concurrency,
            policy::cancel_older_cancels_the_keys_waiting_tasks_in_the_submissions_commit,
            policy::a_retried_run_is_recorded_on_its_attempt_and_waits_out_its_backoff,
            policy::the_queue_is_read_share_by_share_from_a_cursor,
            policy::scope_policies_round_trip_and_are_listed_within_a_scope,
            logs::log_chunks_out_of_order_and_retried_are_kept_once_in_order,
            logs::log_appends_are_fenced_by_attempt_and_holder,
            logs::a_log_past_its_bound_keeps_its_head_and_its_tail_with_a_marker,
            logs::task_logs_are_removed_whole_past_their_retention,
            logs::log_chunks_in_one_batch_are_fenced_by_what_the_batch_did_before_them,
            secrets::secrets_round_trip_are_unique_per_scope_and_are_found_by_name_and_id,
        );
    };
    (@cases $fresh:path; $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                if let Some(store) = $fresh().await {
                    $crate::conformance::$module::$case(store).await;
                }
            }
        )*
    };
}
