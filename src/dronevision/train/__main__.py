from dronevision.train.command import main

main()
