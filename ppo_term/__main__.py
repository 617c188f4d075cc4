from ppo_term.cli import main

main()
